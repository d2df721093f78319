"""The task page over a store real workers wrote: a task killed at its limit and retried
with more memory shows its lineage (each attempt's limit, peak, class, worker, duration),
the chart of peak against limit per attempt, and its key's learned estimate; served by the
read-only app of `oomguard ui`."""

from __future__ import annotations

import re
from pathlib import Path

import oomguard
from fixtures.ui_process import dashboard
from oomguard.store.factory import open_store


def test_a_task_killed_then_retried_with_more_memory_tells_its_lineage(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with oomguard.Runner(
        store=str(path),
        workers=1,
        isolation="watchdog",
        task_memory="48MiB",
        worker_memory="600MiB",
    ) as runner:
        job = runner.sweep("oomguard.examples:allocate", [{"mib": 120, "hold": 0.6}])
        status = job.wait(timeout=120, progress=False)
        assert status["counts"]["succeeded"] == 1, status
    with open_store(str(path), readonly=True) as store:
        task_id = store.queries.task_list(job.id, limit=1)[0].task_id
        lineage = store.dashboard.lineage(task_id)
    assert len(lineage) >= 2, lineage
    first, last = lineage[0], lineage[-1]
    assert first.failure_class == "oom_watchdog" and first.limit_bytes is not None
    assert last.state == "succeeded" and last.limit_bytes is not None
    assert last.limit_bytes > first.limit_bytes
    # A watchdog's peak is sampled: on a loaded machine it can miss the top of a short hold,
    # so only its presence is asserted here (the cgroup tests assert peaks exactly).
    assert last.peak_bytes is not None and last.peak_bytes > 0
    assert [a.n for a in lineage] == list(range(1, len(lineage) + 1))

    with dashboard(path, tmp_path) as ui:
        page = ui.get(f"/ui/tasks/{task_id}")
    assert page.status_code == 200
    html = page.text
    story = re.search(r'<p class="story">(.*?)</p>', html)
    assert story is not None
    assert story[1].startswith("attempt 1 at ") and "oom_watchdog" in story[1]
    told = story[1].split(" \u2192 ")
    assert len(told) == len(lineage)
    assert told[-1].startswith(f"attempt {last.n} at ") and " succeeded, peak " in told[-1]
    bars = re.findall(
        r'<g class="attempt" data-n="(\d+)" data-class="(\w*)" '
        r'data-limit="(\d*)" data-peak="(\d*)">',
        html,
    )
    assert [int(n) for n, *_ in bars] == [a.n for a in lineage]
    assert bars[0][1] == "oom_watchdog" and bars[-1][1] == ""
    assert int(bars[-1][2]) == last.limit_bytes and int(bars[-1][3]) == last.peak_bytes
    assert f'data-bars="{len(lineage)}"' in html
    rows = html[html.index('<table class="lineage">') :]
    rows = rows[: rows.index("</table>")]
    assert rows.count("<tr>") == len(lineage) + 1  # the header and one row per attempt
    assert "w1" in rows
    estimate = html[html.index('id="estimate"') :]
    assert "oomguard.examples:allocate" in estimate[:300]
    assert "Nothing learned yet" not in estimate and "largest peak" in estimate
    assert "killed for memory</dt><dd>at a limit of " in estimate  # a limit, not a time
    assert f'id="attempt-{last.n}"' in html
