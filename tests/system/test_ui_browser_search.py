"""The task, failures, jobs search and work pages in a real browser (headless Chromium from
Debian's `chromium`) over a store real workers wrote (a task killed at its limit by the
watchdog, then retried with more memory; tasks that fail), served by `oomguard ui --store`
(read-only): each page whole, its search form labelled, its charts drawn.

Skipped only where the browser is absent and this is not CI; in CI (CI=true) a missing
browser fails. OOMGUARD_UI_SCREENSHOTS=DIR keeps the screenshots (docs/img/ are made so).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import oomguard
from fixtures.browser import find_chromium, run_browser, screenshot
from fixtures.ui_process import dashboard

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


def test_task_failures_and_search_pages_in_a_browser(chromium: str, tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with oomguard.Runner(
        store=str(path),
        workers=2,
        isolation="watchdog",
        task_memory="48MiB",
        worker_memory="600MiB",
    ) as runner:
        grown = runner.sweep(
            "oomguard.examples:allocate",
            [{"mib": 120, "hold": 0.6}],
            name="grows-past-its-estimate",
        )
        broken = runner.sweep(
            "oomguard.examples:fail",
            [{"message": f"input file {i} is truncated"} for i in range(4)],
            name="reads-broken-inputs",
        )
        grown.wait(timeout=120, progress=False)
        broken.wait(timeout=120, progress=False)
        task_id = runner.store.queries.task_list(grown.id, limit=1)[0].task_id
    with dashboard(path, tmp_path) as ui:
        task = run_browser(chromium, tmp_path, "--dump-dom", f"{ui.url}/ui/tasks/{task_id}")
        assert '<p class="story">attempt 1 at ' in task and "oom_watchdog" in task
        assert len(re.findall(r'<g class="attempt"', task)) >= 2
        failures = run_browser(
            chromium, tmp_path, "--dump-dom", f"{ui.url}/ui/failures?error=truncated"
        )
        assert len(re.findall(r'<tr class="failure"', failures)) == 4
        assert '<label for="f-error">' in failures
        found = run_browser(chromium, tmp_path, "--dump-dom", f"{ui.url}/ui/jobs?state=failed")
        assert f'data-job="{broken.id}"' in found and f'data-job="{grown.id}"' not in found
        screenshot(chromium, tmp_path, f"{ui.url}/ui/tasks/{task_id}", "task.png", 1400)
        screenshot(chromium, tmp_path, f"{ui.url}/ui/failures", "failures.png", 800)
        screenshot(chromium, tmp_path, f"{ui.url}/ui/jobs", "jobs-search.png", 800)
