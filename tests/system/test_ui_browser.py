"""The dashboard in a real browser (headless Chromium from Debian's `chromium`), over a
store that `oomguard run` wrote while the kernel OOM-killed a task in its worker's cgroup,
served by `oomguard ui --store` (read-only).

Skipped only where the browser is absent and this is not CI; in CI (CI=true) a missing
browser fails. OOMGUARD_UI_SCREENSHOTS=DIR keeps the screenshots (docs/img/ are made so).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fixtures.browser import dump_dom, find_chromium, run_browser, screenshot
from fixtures.ui_process import dashboard

if TYPE_CHECKING:
    from conftest import RunCli

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


def test_the_job_page_shows_an_oom_kill_in_a_browser(
    tmp_path: Path, cli: RunCli, require_cgroup: None, chromium: str
) -> None:
    # Small tasks, and one of 600 MiB in workers limited to 256 MiB: the kernel kills it
    # (oom_cgroup) until it fails as needs_more_memory at --worker-memory.
    rows = [{"mib": 600 if i == 7 else 16 + 4 * i, "hold": 0.3, "tag": i} for i in range(16)]
    params = tmp_path / "p.jsonl"
    params.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp_path / "s.sqlite"
    res = cli(
        "run",
        "oomguard.examples:allocate",
        "--params",
        str(params),
        "--store",
        str(store),
        "--worker-memory",
        "256MiB",
        "--workers",
        "2",
        "--isolation",
        "cgroup",
        "--json",
    )
    assert res.returncode == 1, res.stderr  # one task failed for good
    job_id = json.loads(res.stdout)["job_id"]

    with dashboard(store, tmp_path) as ui:
        jobs = dump_dom(chromium, tmp_path, f"{ui.url}/ui/")
        assert f'<a href="/ui/jobs/{job_id}">{job_id}</a>' in jobs
        assert "oom_cgroup" in jobs

        page = dump_dom(chromium, tmp_path, f"{ui.url}/ui/jobs/{job_id}")
        assert "oom_cgroup" in page
        assert "needs_more_memory" in page
        assert re.search(r"Killed process \d+ \(python", page), page[-3000:]
        charts = re.findall(r'<svg class="chart"[^>]*data-points="(\d+)" data-marks="(\d+)"', page)
        assert len(charts) == 3, charts
        points, marks = (int(n) for n in charts[0])  # memory over time
        assert points > 0 and marks >= 1, charts
        kill = re.search(
            r'<g class="kill" data-class="(oom_cgroup)" data-key="([^"]+)" '
            r'data-limit="(\d+)"',
            page,
        )
        assert kill is not None
        assert kill[2] == "oomguard.examples:allocate"
        assert int(kill[3]) <= 256 * 1024**2

        task_id = re.search(r'<tr class="failed-task">\s*<td><a href="/ui/tasks/(\d+)"', page)
        assert task_id is not None
        task = dump_dom(chromium, tmp_path, f"{ui.url}/ui/tasks/{task_id[1]}")
        assert task.count('data-class="oom_cgroup"') >= 1
        assert "Killed process" in task

        screenshot(chromium, tmp_path, f"{ui.url}/ui/", "jobs.png", 420)
        screenshot(chromium, tmp_path, f"{ui.url}/ui/jobs/{job_id}", "job.png", 1500)


def test_a_running_job_page_refreshes_itself_in_the_browser(tmp_path: Path, chromium: str) -> None:
    """live.js fetches the page again and swaps its #live element in place (the browser's
    virtual time lets its timer fire at once; the fetch is real)."""
    import oomguard

    store = tmp_path / "s.sqlite"
    with (
        oomguard.Runner(store=str(store), workers=1, isolation="watchdog") as runner,
        dashboard(store, tmp_path) as ui,
    ):
        job = runner.sweep("oomguard.examples:sleep", [{"seconds": 0.5}] * 40)
        page = dump_dom(chromium, tmp_path, f"{ui.url}/ui/jobs/{job.id}")
        assert 'data-live="1"' in page
        refreshed = run_browser(
            chromium,
            tmp_path,
            "--virtual-time-budget=7000",
            "--dump-dom",
            f"{ui.url}/ui/jobs/{job.id}",
        )
        found = re.search(r'<main id="live" data-live="\d" data-refreshes="(\d+)"', refreshed)
        assert found is not None and int(found[1]) >= 1, refreshed[:2000]
        assert f"Job {job.id}" in refreshed
