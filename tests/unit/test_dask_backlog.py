"""The Dask executor's backlog: how many attempts go in one Dask task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from oomguard.executors.base import Attempt
from oomguard.executors.dask.backlog import (
    GROUP_MAX_ITEMS,
    GROUP_MAX_RESULT_BYTES,
    GROUP_UNSEEN_ITEMS,
    Backlog,
)
from oomguard.executors.dask.remote.answers import Outcome
from oomguard.worker.calls import JsonCall

MIB = 1024 * 1024
ISOLATED = {"tcp://w1": "cgroup-v1", "tcp://w2": "watchdog"}


@dataclass
class FakeTask:
    fn: str = "mod:sim"
    kind: str = "call"


@dataclass
class FakeRun:
    attempt_id: int
    task: FakeTask = field(default_factory=FakeTask)
    limit: int = 0
    worker: Any = None


def item(run: Any, held: Any = None) -> JsonCall:
    return JsonCall(run.attempt_id, run.task.fn, "{}")


def sizes(backlog: Backlog) -> list[int]:
    out = []
    while backlog:
        runs, _, _, _ = backlog.take()
        out.append(len(runs))
    return out


def test_small_tasks_until_results_are_seen_then_as_many_as_their_results_allow() -> None:
    backlog = Backlog(lambda event: None)
    runs = cast(list[Attempt], [FakeRun(i) for i in range(100)])
    backlog.add(runs, 0, item)
    assert sizes(backlog) == [GROUP_UNSEEN_ITEMS] * (100 // GROUP_UNSEEN_ITEMS) + [100 % 8]

    # Small results: up to GROUP_MAX_ITEMS attempts a Dask task.
    small = [Outcome(0, payload=b"x" * 100), Outcome(1)]
    backlog.saw(runs[:2], small, {"tcp://w1": "thread", "tcp://w2": "cgroup-v1"})
    backlog.add(runs[:20], 0, item)
    assert sizes(backlog) == [8, 8, 4]  # a worker in thread mode: its death costs a task
    backlog.saw(runs[:2], small, ISOLATED)
    backlog.add(runs, 0, item)
    assert sizes(backlog) == [GROUP_MAX_ITEMS] * 3 + [100 - 3 * GROUP_MAX_ITEMS]

    # The largest result seen sizes them: 8 MiB results, 4 a Dask task.
    big = GROUP_MAX_RESULT_BYTES // 4
    backlog.saw(runs[:1], [Outcome(0, payload=b"x" * big)], ISOLATED)
    backlog.add(runs[:10], 0, item)
    assert sizes(backlog) == [4, 4, 2]

    # A result larger than the bound: one attempt a Dask task; another function unseen.
    backlog.saw(runs[:1], [Outcome(0, payload=b"x" * (GROUP_MAX_RESULT_BYTES + 1))], ISOLATED)
    backlog.add(runs[:3], 0, item)
    assert sizes(backlog) == [1, 1, 1]
    other = cast(
        list[Attempt], [FakeRun(i, FakeTask(fn="mod:agg", kind="aggregate")) for i in range(10)]
    )
    backlog.add(other, 0, item)
    assert sizes(backlog) == [GROUP_UNSEEN_ITEMS, 2]
