"""The task, failures, jobs search and work pages in a real browser (headless Chromium from
Debian's `chromium`) over a store real workers wrote (a task killed at its limit by the
watchdog, then retried with more memory; tasks that fail), served by `oomguard ui --store`
(read-only): each page whole, its search form labelled, its charts drawn.

Skipped only where the browser is absent and this is not CI; in CI (CI=true) a missing
browser fails. OOMGUARD_UI_SCREENSHOTS=DIR keeps the screenshots (docs/img/ are made so).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import oomguard
from fixtures.ui_process import dashboard

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


def _browser(chromium: str, tmp_path: Path, *args: str) -> str:
    profile = tmp_path / "chromium-profile"
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _screenshot(chromium: str, tmp_path: Path, url: str, name: str, height: int) -> None:
    out = tmp_path / name
    _browser(
        chromium,
        tmp_path,
        "--hide-scrollbars",
        f"--window-size=1400,{height}",
        f"--screenshot={out}",
        url,
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("OOMGUARD_UI_SCREENSHOTS")
    if keep:
        shutil.copy(out, Path(keep) / name)


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
        task = _browser(chromium, tmp_path, "--dump-dom", f"{ui.url}/ui/tasks/{task_id}")
        assert '<p class="story">attempt 1 at ' in task and "oom_watchdog" in task
        assert len(re.findall(r'<g class="attempt"', task)) >= 2
        failures = _browser(
            chromium, tmp_path, "--dump-dom", f"{ui.url}/ui/failures?error=truncated"
        )
        assert len(re.findall(r'<tr class="failure"', failures)) == 4
        assert '<label for="f-error">' in failures
        found = _browser(chromium, tmp_path, "--dump-dom", f"{ui.url}/ui/jobs?state=failed")
        assert f'data-job="{broken.id}"' in found and f'data-job="{grown.id}"' not in found
        _screenshot(chromium, tmp_path, f"{ui.url}/ui/tasks/{task_id}", "task.png", 1400)
        _screenshot(chromium, tmp_path, f"{ui.url}/ui/failures", "failures.png", 800)
        _screenshot(chromium, tmp_path, f"{ui.url}/ui/jobs", "jobs-search.png", 800)
