"""The PostgreSQL store's hot-path writes, many rows as one statement of arrays
(store/postgres/batch.py), sent in a pipelined transaction (store/postgres/connection.py),
against a real throwaway cluster: the rows they leave are SQLite's for the same writes, a
row written twice in one group keeps its last write, and a statement that fails in the
pipeline rolls its whole transaction back and leaves the connection usable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from oomguard.errors import StoreError
from oomguard.store import open_store
from oomguard.store.postgres.batch import BATCHES
from oomguard.store.protocol import Store
from oomguard.store.queries import Q
from oomguard.store.records import NewTask
from oomguard.store.sqlite import SqliteStore
from oomguard.store.writes import AttemptRow, PendingWrites

#: the tasks' timeouts: an int among floats and NULLs (an array is typed by its first value)
TIMEOUTS = [30, 1.5, None, 2, None, 0.25]


def _grouped_run(store: Store) -> int:
    """A job of six tasks through grouped commits: inserted in one transaction, taken,
    started (one of them twice in a group: its last write wins), ended and succeeded; the
    first task's attempts after its starts are returned."""
    store.create_job("j1", name="t", fn="m:f", agg=None)
    store.add_tasks(
        [
            NewTask(job_id="j1", grp=g, kind="task", fn="m:f", params=f'{{"x": {g}}}', timeout=t)
            for g, t in enumerate(TIMEOUTS)
        ],
        job_id="j1",
        groups=len(TIMEOUTS),
    )
    store.set_job_groups("j1", len(TIMEOUTS), sealed=True)
    tasks = store.take_ready("j1", 10, 10)
    now = 1000.0
    writes = PendingWrites()
    for i, task in enumerate(tasks):
        writes.insert_attempt(
            AttemptRow(
                id=100 + i,
                task_id=task.id,
                n=1,
                scheduler_id="s1",
                started_at=now + i,
                admitted_bytes=10 * i,
                limit_bytes=1000,
                worker=f'w"\\{i % 2} é',  # quoted, escaped, not ASCII
                pid=None if i == 3 else 4000 + i,
            )
        )
        writes.task_running(task.id, 1, now + i, 100 + i)
    writes.task_running(tasks[0].id, 7, now + 50, 100)  # the same task again: last wins
    store.apply(writes.take())
    assert isinstance(store, SqliteStore)
    restarted = store.db.execute("SELECT attempts FROM tasks WHERE id = ?", (tasks[0].id,))
    attempts = int(restarted.fetchone()[0])
    for i, task in enumerate(tasks):
        writes.end_attempt(
            100 + i,
            task.id,
            state="succeeded",
            failure_class=None,
            evidence='{"exit": 0}' if i % 2 else None,
            peak_bytes=None if i == 2 else 5000 + i,
            pid=4000 + i,
            worker=None if i % 2 else f"x{i}",
            ended_at=now + 10 + i,
        )
        writes.result(
            task.id,
            job_id="j1",
            attempt_id=100 + i,
            value=None if i == 4 else bytes([i]) * 3,
            kind="task",
            grp=task.grp,
            n=1,
            now=now + 10 + i,
        )
    store.apply(writes.take())
    return attempts


def _rows(store: SqliteStore) -> dict[str, list[tuple[object, ...]]]:
    return {
        "tasks": store.db.execute(
            "SELECT id, grp, state, attempts, timeout, updated_at FROM tasks ORDER BY id"
        ).fetchall(),
        "attempts": store.db.execute(
            "SELECT id, task_id, state, worker, pid, started_at, ended_at, admitted_bytes,"
            " peak_bytes, evidence FROM attempts ORDER BY id"
        ).fetchall(),
        "results": store.db.execute(
            "SELECT task_id, attempt_id, value, kind, size FROM results ORDER BY task_id"
        ).fetchall(),
    }


def test_grouped_writes_leave_the_rows_sqlite_leaves(postgres_url: str, tmp_path: Path) -> None:
    stores = [open_store(str(tmp_path / "s.sqlite")), open_store(postgres_url)]
    try:
        rows = []
        for store in stores:
            assert _grouped_run(store) == 7  # the first task's last start won
            assert isinstance(store, SqliteStore)
            got = _rows(store)
            got["results"] = [
                (*r[:2], bytes(r[2]) if isinstance(r[2], bytes | memoryview) else r[2], *r[3:])
                for r in got["results"]
            ]
            rows.append({k: [tuple(r) for r in v] for k, v in got.items()})
    finally:
        for store in stores:
            store.close()
    sqlite, postgres = rows
    assert postgres == sqlite
    # the ids follow the submission's order; an int timeout among floats stays a number
    assert [r[1] for r in postgres["tasks"]] == list(range(len(TIMEOUTS)))
    assert [r[4] for r in postgres["tasks"]] == TIMEOUTS
    assert len(postgres["results"]) == len(TIMEOUTS)


def test_the_hot_writes_have_a_batch_form() -> None:
    """The writes every task makes run as one statement per group, not one per row."""
    for name in ("insert_task", "task_queued", "insert_attempt", "task_running"):
        assert Q[name] in BATCHES
    for name in ("end_attempt", "insert_result", "task_succeeded"):
        assert Q[name] in BATCHES


def test_a_failed_statement_rolls_its_pipelined_transaction_back(postgres_url: str) -> None:
    store = open_store(postgres_url)
    try:
        assert isinstance(store, SqliteStore)
        store.create_job("j1", name="t", fn="m:f", agg=None)
        row = NewTask(job_id="j1", grp=0, kind="task", fn="m:f")
        with pytest.raises(StoreError), store.transaction() as db:
            db.execute(Q["set_total_groups"], (5, "j1"))  # not waited for
            # NULL job_id: refused by its NOT NULL, its answer read only at COMMIT
            db.executemany(
                Q["insert_task"],
                [
                    (None, 0, "task", None, "m:f", *(None,) * 4, "ready", 0, 0, 3)
                    + (None,) * 4
                    + (time.time(),)
                ]
                * 2,
            )
        assert store.job_groups("j1")[0] == 0  # the update before it was rolled back
        # the connection is usable: the next transaction commits, a row count is read
        store.add_tasks([row, row], job_id="j1", groups=1)
        first = min(task.id for task in store.take_ready("j1", 10, 10))
        with store.transaction() as db:
            changed = db.execute(Q["requeue_task"], (first,)).rowcount
        assert changed == 1
        assert store.job_groups("j1")[0] == 1
    finally:
        store.close()
