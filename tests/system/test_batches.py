"""Short tasks sent to a worker in one batch are still classified one by one: a process one
task started and the kernel OOM-killed in the worker's cgroup belongs to that task, not to
the last task of the batch."""

from __future__ import annotations

from pathlib import Path

import pytest

import oomguard
from oomguard.store.records import AttemptSpan

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]


def test_a_child_oom_kill_in_a_batch_is_the_task_that_started_it(
    tmp_path: Path, require_cgroup: None
) -> None:
    # One worker; after the first (the probe) the tasks take microseconds, so they go out
    # in batches of several, the fourth (which starts a 600 MiB child) among them.
    params = [{"mib": 600 if i == 3 else 0} for i in range(12)]
    with oomguard.Runner(
        store=str(tmp_path / "s.db"), workers=1, worker_memory="256MiB", task_memory="128MiB"
    ) as runner:
        job = runner.sweep("fixtures.tasks:alloc_in_child", params)
        job.wait(timeout=150, progress=False)
        attempts = list(runner.store.queries.all_attempts(job.id))
        batched = max(len(a) for a in _batches(runner, job.id))
    assert batched > 1, "the tasks were not batched: nothing was tested"
    by_task: dict[int, list[str | None]] = {}
    for a in attempts:
        by_task.setdefault(a.task_id, []).append(a.failure_class)
    killed_task = min(by_task) + 3  # the fourth task: params are inserted in order
    assert all(c == "oom_cgroup" for c in by_task[killed_task])
    others = {t: c for t, c in by_task.items() if t != killed_task}
    assert all(c == [None] for c in others.values()), others


def _batches(runner: oomguard.Runner, job_id: str) -> list[list[int]]:
    """Attempts that started on the same worker within 1 ms of each other: one message."""
    rows = sorted(runner.store.queries.all_attempts(job_id), key=_started)
    groups: list[list[int]] = []
    for a in rows:
        if groups and _started(a) - _started(rows[groups[-1][-1]]) < 1e-3:
            groups[-1].append(rows.index(a))
        else:
            groups.append([rows.index(a)])
    return groups


def _started(a: AttemptSpan) -> float:
    assert a.started_at is not None, a  # every attempt of the job started
    return a.started_at
