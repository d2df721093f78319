"""An aggregation's call item over the store, with and without results an executor holds
(the Dask executor's held results: docs/ARCHITECTURE.md, "Dask")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest

from oomguard.scheduler.items import call_item
from oomguard.store.records import NewTask, TaskRow
from oomguard.store.sqlite import SqliteStore
from oomguard.store.writes import AttemptRow, PendingWrites
from oomguard.worker.calls import AggregateCall, HeldRef

if TYPE_CHECKING:
    from oomguard.scheduler.running import Running


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "s.sqlite")
    yield s
    s.close()


def _job(store: SqliteStore, groups_of: int) -> None:
    store.create_job("j1", name="t", fn="m:f", agg="m:g")
    params = json.dumps({"x": 0})
    rows = [
        NewTask(
            job_id="j1", grp=0, kind="task", replicate=r, fn="m:f", params=params, state="ready"
        )
        for r in range(groups_of)
    ]
    rows.append(
        NewTask(
            job_id="j1",
            grp=0,
            kind="aggregate",
            fn="m:g",
            params=params,
            state="pending",
            deps=groups_of,
        )
    )
    store.add_tasks(rows, job_id="j1", groups=1)
    store.set_job_groups("j1", 1, sealed=True)


def _succeed(store: SqliteStore, task: TaskRow, attempt_id: int, value: bytes) -> None:
    writes = PendingWrites()
    writes.insert_attempt(
        AttemptRow(
            id=attempt_id,
            task_id=task.id,
            n=1,
            scheduler_id="s1",
            started_at=time.time(),
            admitted_bytes=0,
            limit_bytes=0,
            worker="w1",
            pid=1,
        )
    )
    writes.task_running(task.id, 1, time.time(), attempt_id)
    store.apply(writes.take())
    writes.result(
        task.id,
        job_id=task.job_id,
        attempt_id=attempt_id,
        value=value,
        kind=task.kind,
        grp=task.grp,
        n=1,
        now=time.time(),
    )
    store.apply(writes.take())


def test_an_aggregation_refers_to_the_results_an_executor_holds_and_reads_the_others(
    store: SqliteStore,
) -> None:
    _job(store, groups_of=3)
    reps = store.take_ready("j1", 10, 10)
    values = [b"small", b"b" * (2 * 1024 * 1024), b"c" * (2 * 1024 * 1024)]
    for attempt_id, (task, value) in enumerate(zip(reps, values, strict=True), start=1):
        _succeed(store, task, attempt_id, value)
    # A replicate of a job with an aggregation is asked to be held where it runs.
    rep = cast("Running", SimpleNamespace(attempt_id=9, task=reps[0]))
    assert call_item(rep, store, lambda ids: (None, set())).hold
    assert not call_item(rep, store).hold
    (agg,) = store.take_ready("j1", 10, 10)
    run = cast("Running", SimpleNamespace(attempt_id=10, task=agg))
    plain = call_item(run, store)
    assert isinstance(plain, AggregateCall) and plain.results == tuple(values)
    assert plain.at is None
    asked: list[list[int | None]] = []

    def held(ids: Sequence[int | None]) -> tuple[str | None, set[int]]:
        asked.append(list(ids))
        return "tcp://w1", {2}

    item = call_item(run, store, held)
    assert asked == [[1, 2, 3]]  # the attempts whose results were stored, by replicate
    assert isinstance(item, AggregateCall)
    assert item.results == (b"small", HeldRef(2), values[2]) and item.at == "tcp://w1"
    assert item.params == plain.params
