"""The work page beside a live scheduler (the read-only app of `oomguard ui` over the store
real workers write): tasks running and waiting per job and overall, the memory admitted
against the budget from the scheduler's latest sample, live while work remains; nothing
left when the job ends."""

from __future__ import annotations

import re
from pathlib import Path

import oomguard
from fixtures.polling import wait_for
from fixtures.ui_process import dashboard


def test_running_and_waiting_work_and_memory_against_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with (
        oomguard.Runner(
            store=str(path),
            workers=2,
            isolation="watchdog",
            task_memory="64MiB",
            worker_memory="512MiB",
            memory_budget="1GiB",
        ) as runner,
        dashboard(path, tmp_path) as ui,
    ):
        job = runner.sweep("oomguard.examples:sleep", [{"seconds": 1.0}] * 10)

        def busy() -> str | None:
            html = ui.get("/ui/work").text
            row = re.search(rf'<tr class="open-job" data-job="{job.id}">(.*?)</tr>', html, re.S)
            meter = re.search(r'<meter id="admitted" min="0" max="(\d+)" value="(\d+)"', html)
            if row is None or meter is None or int(meter[2]) == 0:
                return None
            cells = re.findall(r'<td class="num">([^<]*)</td>', row[1])
            running, waiting = int(cells[0]), int(cells[1])
            return html if running == 2 and waiting > 0 else None

        html = wait_for(busy, timeout=60)
        assert 'data-live="1"' in html
        overall = re.search(r'<dd class="running">(\d+) tasks</dd>', html)
        assert overall is not None and overall[1] == "2"
        meter = re.search(r'<meter id="admitted" min="0" max="(\d+)" value="(\d+)"', html)
        assert meter is not None
        assert int(meter[1]) == 2**30 and int(meter[2]) >= 2 * 64 * 2**20
        assert "of a budget of 1GiB" in html

        job.wait(timeout=120, progress=False)
        done = ui.get("/ui/work").text
        assert "Nothing waits or runs." in done and 'data-live="0"' in done
        assert job.id not in done
