"""The store's contract: what the scheduler, the API and the CLI rely on
(:class:`~oomguard.store.protocol.Store`).

The ``store`` fixture opens a store through :func:`~oomguard.store.open_store` for each
backend in ``BACKENDS``: SQLite on real files, PostgreSQL in a fresh database of a real
throwaway cluster (``fixtures/postgres.py``). Tests that read the SQLite file itself
(pragmas, query plans, migrations) are SQLite's own (:func:`sqlite_only`).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomguard.errors import NotAStoreError, SchemaTooNewError, StoreBusyError, TakenOverError
from oomguard.store import Store, open_store
from oomguard.store.db import Db
from oomguard.store.factory import is_url
from oomguard.store.queries import MIGRATIONS, SCHEMA_VERSION
from oomguard.store.records import KeyEstimate, NewTask, TaskRow
from oomguard.store.sqlite import SqliteStore
from oomguard.store.writes import AttemptRow, PendingWrites

#: the store backends the contract runs against
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh, empty store of each backend is."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "s.sqlite")


def sqlite_only(store: Store) -> SqliteStore:
    """Skip a test that looks inside the SQLite backend (its file, pragmas, query plans)
    on the other backends."""
    if is_url(store.location):
        pytest.skip("looks inside the SQLite backend")
    assert isinstance(store, SqliteStore)
    return store


def sql_store(store: Store) -> SqliteStore:
    """``store`` with its SQL connection and private parts: both backends run the same
    statements (PostgreSQL's translated by its connection), the methods of one class."""
    assert isinstance(store, SqliteStore)
    return store


@pytest.fixture
def store(store_location: str) -> Iterator[Store]:
    """A fresh store made by :func:`~oomguard.store.open_store`, as the rest of oomguard
    gets one."""
    s = open_store(store_location)
    yield s
    s.close()


def _job(store: Store, n: int = 10, groups_of: int = 1, agg: bool = False) -> str:
    store.create_job("j1", name="t", fn="m:f", agg="m:g" if agg else None)
    rows = []
    for g in range(n):
        for r in range(groups_of):
            rows.append(
                NewTask(
                    job_id="j1",
                    grp=g,
                    kind="task",
                    replicate=r,
                    fn="m:f",
                    params=json.dumps({"x": g}),
                    state="ready",
                )
            )
        if agg:
            rows.append(
                NewTask(
                    job_id="j1",
                    grp=g,
                    kind="aggregate",
                    fn="m:g",
                    params=json.dumps({"x": g}),
                    state="pending",
                    deps=groups_of,
                )
            )
    store.add_tasks(rows, job_id="j1", groups=n)
    store.set_job_groups("j1", n, sealed=True)
    return "j1"


def _claim(store: Store, task: TaskRow, attempt_id: int, sid: str = "s1") -> None:
    writes = PendingWrites()
    writes.insert_attempt(
        AttemptRow(
            id=attempt_id,
            task_id=task.id,
            n=1,
            scheduler_id=sid,
            started_at=time.time(),
            admitted_bytes=0,
            limit_bytes=0,
            worker="w1",
            pid=1,
        )
    )
    writes.task_running(task.id, 1, time.time(), attempt_id)
    store.apply(writes.take())


def _result(store: Store, task: TaskRow, attempt_id: int, value: bytes = b"v") -> int:
    writes = PendingWrites()
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
    return store.apply(writes.take())


def _schema(db: Db) -> dict[str, object]:
    """Tables with their columns, indexes (with their columns and WHERE) and keys."""
    shape: dict[str, object] = {}
    for kind, name, sql in db.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
    ):
        if kind == "table":
            shape[name] = (
                [tuple(c[1:]) for c in db.execute(f"PRAGMA table_xinfo({name})")],
                sorted(tuple(k[2:5]) for k in db.execute(f"PRAGMA foreign_key_list({name})")),
            )
        elif kind == "index":
            where = sql.partition(" WHERE ")[2] if sql else ""
            shape[name] = ([tuple(c) for c in db.execute(f"PRAGMA index_info({name})")], where)
    return shape


def test_migrations_add_up_to_the_schema(tmp_path: Path) -> None:
    fresh = SqliteStore(tmp_path / "fresh.sqlite")  # made from sql/schema.sql
    migrated = sqlite3.connect(tmp_path / "migrated.sqlite")
    for _version, sql in MIGRATIONS:
        migrated.executescript(sql)
    assert _schema(migrated) == _schema(fresh.db)
    assert {
        "jobs",
        "tasks",
        "attempts",
        "results",
        "events",
        "locks",
        "estimates",
        "parts",
        "schedulers",
        "meta",
    } <= set(_schema(fresh.db))
    assert fresh.queries.meta("schema_version") == str(SCHEMA_VERSION)
    assert fresh.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    fresh.close()
    migrated.close()


def test_a_store_of_every_older_version_migrates_to_the_fresh_schema(tmp_path: Path) -> None:
    fresh = SqliteStore(tmp_path / "fresh.sqlite")
    for version, _sql in MIGRATIONS[:-1]:
        path = tmp_path / f"v{version}.sqlite"
        db = sqlite3.connect(path)
        for _v, sql in MIGRATIONS[:version]:
            db.executescript(sql)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('application', 'oomguard')")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version),))
        db.execute(
            "INSERT INTO jobs (id, name, fn, spec, created_at) VALUES ('old', 'n', 'm:f', '{}', 0)"
        )
        db.commit()
        db.close()
        with SqliteStore(path) as store:
            assert _schema(store.db) == _schema(fresh.db)
            assert store.queries.meta("schema_version") == str(SCHEMA_VERSION)
            assert store.job("old").name == "n"  # its rows are kept
    fresh.close()


def test_take_ready_respects_window_and_open_groups(store: Store) -> None:
    _job(store, n=10, groups_of=2)
    rows = store.take_ready("j1", limit=100, grp_limit=3)
    assert sorted({r.grp for r in rows}) == [0, 1, 2]
    assert len(rows) == 6
    assert store.queries.counts("j1")["queued"] == 6
    assert store.take_ready("j1", limit=100, grp_limit=3) == []


def test_read_ready_reads_without_claiming_and_skips_what_is_held(store: Store) -> None:
    # A scheduler that owns the store alone reads its window (no write): the tasks stay
    # ready; those it holds are not read again, nor those begun, nor a retry not yet due.
    _job(store, n=10, groups_of=2)
    first = store.read_ready("j1", limit=4, grp_limit=3)
    assert [(t.grp, t.replicate) for t in first] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert store.queries.counts("j1")["ready"] == 20 and store.queries.counts("j1")["queued"] == 0
    held = [t.id for t in first]
    rest = store.read_ready("j1", limit=100, grp_limit=3, held=held)
    assert [(t.grp, t.replicate) for t in rest] == [(2, 0), (2, 1)]
    _claim(store, first[0], 1)  # begun: running
    writes = PendingWrites()
    writes.task_retry(
        first[1].id, n=1, oom_attempts=0, memory=None, not_before=time.time() + 3600,
        failure_class="error", error="boom", now=time.time(),
    )  # fmt: skip
    store.apply(writes.take())
    again = store.read_ready("j1", limit=100, grp_limit=3, held=held[2:])
    assert [t.id for t in again] == [t.id for t in rest]
    assert store.read_ready("j1", limit=100, grp_limit=3, held=held + [t.id for t in rest]) == []


def test_a_connection_that_defers_checkpoints_leaves_them_to_another(store_location: str) -> None:
    # The scheduler loop's connection checkpoints only past 10,000 WAL pages; the sampler's
    # checkpoint() copies what it committed into the store file (PostgreSQL: nothing to do).
    loop, other = open_store(store_location), open_store(store_location)
    try:
        loop.defer_checkpoints()
        _job(loop, n=50)
        other.checkpoint()
        assert len(loop.read_ready("j1", 100, 100)) == 50
        if isinstance(loop, SqliteStore) and not is_url(store_location):
            (pages,) = loop.db.execute("PRAGMA wal_autocheckpoint").fetchone()
            assert pages == 10_000
    finally:
        loop.close()
        other.close()


def test_result_is_stored_exactly_once(store: Store) -> None:
    _job(store, n=1, groups_of=2, agg=True)
    t0, t1 = store.take_ready("j1", 10, 10)
    _claim(store, t0, 1)
    assert _result(store, t0, 1) == 0
    assert _result(store, t0, 1, b"late duplicate") == 1
    assert store.queries.counter("duplicate_results") == 1
    (row,) = [r for r in store.queries.result_rows("j1") if r[0] == t0.id]
    assert row[-1] == b"v"
    # The aggregation is released once, when its last replicate succeeds.
    assert store.queries.counts("j1")["pending"] == 1
    _claim(store, t1, 2)
    _result(store, t1, 2)
    assert store.queries.counts("j1")["ready"] == 1 and store.queries.counts("j1")["pending"] == 0


def test_claims_and_attempts_ended_before_their_claim_are_stored_whole(store: Store) -> None:
    # A claim is inserted without the columns of an ending (insert_claim); an attempt that
    # ended before its claim was committed is inserted with them (insert_attempt).
    _job(store, n=2)
    first, second = store.take_ready("j1", 10, 100)
    claim = AttemptRow(
        id=1, task_id=first.id, n=1, scheduler_id="s1", started_at=10.0,
        admitted_bytes=64, limit_bytes=128,
    )  # fmt: skip
    ended = AttemptRow(
        id=2, task_id=second.id, n=1, scheduler_id="s1", started_at=11.0,
        admitted_bytes=0, limit_bytes=256, state="failed", worker="w2", pid=42,
        ended_at=12.0, failure_class="error", peak_bytes=99, evidence='{"a": 1}',
    )  # fmt: skip
    writes = PendingWrites()
    writes.insert_attempt(claim)
    writes.insert_attempt(ended)
    store.apply(writes.take())
    (one,) = store.queries.attempts(first.id)
    assert (one.attempt_id, one.n, one.state, one.started_at) == (1, 1, "running", 10.0)
    assert (one.admitted_bytes, one.limit_bytes) == (64, 128)
    assert (one.worker, one.pid, one.ended_at, one.failure_class) == (None, None, None, None)
    assert (one.peak_bytes, one.evidence) == (None, None)
    (two,) = store.queries.attempts(second.id)
    assert (two.attempt_id, two.state, two.worker, two.pid) == (2, "failed", "w2", 42)
    assert (two.started_at, two.ended_at, two.failure_class) == (11.0, 12.0, "error")
    assert (two.admitted_bytes, two.limit_bytes, two.peak_bytes) == (0, 256, 99)
    assert two.evidence == {"a": 1}


def test_dead_scheduler_attempts_are_lost_and_locks_released(store: Store, tmp_path: Path) -> None:
    store = sql_store(store)
    _job(store, n=2)
    t0, _ = store.take_ready("j1", 10, 10)
    # A scheduler process that has exited: its pid is gone.
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(proc.stdout)
    store.db.execute(
        "INSERT INTO schedulers (id, hostname, pid, start_time, started_at, heartbeat) "
        "VALUES ('old', ?, ?, 1.0, 0, ?)",
        (__import__("socket").gethostname(), dead_pid, time.time()),
    )
    _claim(store, t0, 1, sid="old")
    writes = PendingWrites()
    writes.acquire_lock("k", 1, t0.id)
    store.apply(writes.take())
    recovery = store.leases.register("new", lease_ttl=30)
    assert recovery.lost_attempts == 1
    assert recovery.released_locks == 1
    assert store.queries.counts("j1")["ready"] == 2
    (attempt,) = store.queries.attempts(t0.id)
    assert attempt.failure_class == "lost"


def test_live_scheduler_keeps_the_store(store: Store) -> None:
    store.leases.register("a", lease_ttl=30)
    other = open_store(store.location)
    with pytest.raises(StoreBusyError):
        other.leases.register("b", lease_ttl=30)
    other.close()


def test_not_a_store_and_newer_schema_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.sqlite"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE users (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(NotAStoreError):
        SqliteStore(foreign)
    newer = tmp_path / "newer.sqlite"
    SqliteStore(newer).close()
    db = sqlite3.connect(newer)
    db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(SchemaTooNewError):
        SqliteStore(newer)
    db = sqlite3.connect(newer)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "999"
    db.close()


def test_retry_failed_and_cancel(store: Store) -> None:
    _job(store, n=3)
    rows = store.take_ready("j1", 10, 10)
    writes = PendingWrites()
    writes.task_failed(rows[0].id, n=1, oom_attempts=0, failure_class="error", error="x", now=0)
    store.apply(writes.take())
    assert store.queries.counts("j1")["failed"] == 1
    assert store.admin.retry_failed("j1") == 1
    assert store.queries.counts("j1")["ready"] == 1
    assert store.admin.cancel("j1") == 3
    assert store.queries.counts("j1")["cancelled"] == 3


def test_a_task_cancelled_while_its_attempt_runs_stays_cancelled(store: Store) -> None:
    # The scheduler records what its attempts did after a cancel or a job's stop reached
    # the store (an attempt that failed on its own just before it was killed, a claim
    # committed late): none of those late writes makes a cancelled task run again.
    _job(store, n=4)
    rows = store.take_ready("j1", 10, 10)
    for i, row in enumerate(rows[:3]):
        _claim(store, row, i + 1)
    assert store.admin.stop_job("j1", "stopped: cannot load its task") == 4

    def late_writes() -> None:
        now = time.time()
        writes = PendingWrites()
        writes.task_retry(
            rows[0].id, n=2, oom_attempts=0, memory=None, not_before=now,
            failure_class="error", error="MainGuardError: late", now=now,
        )  # fmt: skip
        writes.task_failed(
            rows[1].id, n=1, oom_attempts=0, failure_class="error", error="x", now=now
        )
        writes.task_requeued(rows[2].id, n=0, now=now)
        writes.task_running(rows[3].id, 1, now, 9)
        store.apply(writes.take())

    late_writes()
    counts = store.queries.counts("j1")
    assert counts["cancelled"] == 4 and counts["ready"] == 0, counts
    assert store.read_ready("j1", limit=10, grp_limit=10) == []
    # The same writes on open tasks (the job reopened: all ready) each take effect.
    assert store.admin.reopen_stopped("j1") == 4
    late_writes()
    states = {k: v for k, v in store.queries.counts("j1").items() if v}
    assert states == {"ready": 1, "failed": 1, "queued": 1, "running": 1}, states


def test_large_results_go_to_blob_files(store: Store) -> None:
    store = sql_store(store)
    _job(store, n=1)
    (t0,) = store.take_ready("j1", 10, 10)
    big = b"x" * (2 * 1024 * 1024)
    _claim(store, t0, 1)
    _result(store, t0, 1, big)
    assert store.db.execute("SELECT value_ref FROM results").fetchone()[0]
    assert next(store.queries.result_rows("j1"))[-1] == big


def test_large_params_go_to_blob_files_and_come_back(store: Store) -> None:
    store = sql_store(store)
    store.create_job("j2", name="t", fn="m:f", agg=None)
    big = {"blob": "y" * (200 * 1024)}
    stored = store.blobs.params_row(big)
    store.add_tasks(
        [
            NewTask(
                job_id="j2",
                grp=0,
                kind="task",
                fn="m:f",
                state="ready",
                params=stored.params,
                params_ref=stored.params_ref,
            )
        ],
        job_id="j2",
        groups=1,
    )
    assert store.db.execute("SELECT params FROM tasks").fetchone()[0] is None
    (task,) = store.take_ready("j2", 10, 10)
    assert task.params is not None and json.loads(task.params) == big
    first_input = store.group_inputs("j2", 0)[0]
    assert first_input is not None and json.loads(first_input) == big


def test_estimates_persist(store: Store) -> None:
    store.put_estimates([KeyEstimate("f|n=1", 100, 80, 3)])
    store.put_estimates([KeyEstimate("f|n=1", 200, 160, 4), KeyEstimate("f|n=2", 10, 8, 1)])
    assert store.estimates() == {"f|n=1": (200, 160, 4), "f|n=2": (10, 8, 1)}


def test_state_queries_read_one_index_not_the_table(store: Store) -> None:
    """Every state change rewrites one index entry (``tasks_state``), and the queries that
    ask by state still seek into it: none scans the tasks table."""
    store = sqlite_only(store)
    from oomguard.store.queries import Q

    queries: dict[str, tuple[str, dict[str, int | str | None] | tuple[str, ...]]] = {
        "take_ready": (Q["take_ready"], {"job_id": "j", "now": 1, "grp_limit": 5, "limit": 3}),
        "low_group": (Q["low_group"], {"job_id": "j"}),
        "counts": (Q["task_counts"], ("j",)),
        "open_by_job": (Q["open_tasks_by_job"], ()),
        "task_list_in_state": (
            Q["task_list_in_state"],
            {
                "job_id": "j",
                "state": "failed",
                "after": None,
                "failure_class": None,
                "params": False,
                "limit": 10,
            },
        ),
        "release_dependent": (Q["release_dependent"], {"job_id": "j", "grp": 1, "now": 1}),
    }
    indexes = {
        r[0]
        for r in store.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'"
        )
    }
    assert indexes == {"tasks_job_grp", "tasks_state"}
    for name, (sql, args) in queries.items():
        plan = [r[-1] for r in store.db.execute("EXPLAIN QUERY PLAN " + sql, args)]
        assert not any(step.startswith("SCAN tasks") for step in plan), (name, plan)
        assert any("USING" in step and "INDEX" in step for step in plan), (name, plan)
    # take_ready comes out in group order without sorting
    plan = [
        r[-1]
        for r in store.db.execute(
            "EXPLAIN QUERY PLAN " + queries["take_ready"][0], queries["take_ready"][1]
        )
    ]
    assert not any("TEMP B-TREE" in step for step in plan), plan


def test_results_of_a_job_without_aggregations_release_nothing(store: Store) -> None:
    """A job without aggregations has no dependants to release; one with them still
    releases its aggregation when the last replicate succeeds."""
    store = sql_store(store)
    job = _job(store, n=2, groups_of=2, agg=True)
    tasks = [t for t in store.take_ready(job, 10, 10) if t.kind == "task"]
    for i, task in enumerate(tasks, start=1):
        _claim(store, task, i)
        _result(store, task, i)
    counts = store.queries.counts(job)
    assert counts["ready"] == 2 and counts["succeeded"] == 4, counts
    assert store._aggregates(job) is True
    store.create_job("j2", name="t", fn="m:f", agg=None)
    assert store._aggregates("j2") is False
    # What it remembers is bounded however many jobs it sees.
    from oomguard.store import sqlite as sqlite_module

    for i in range(sqlite_module.AGGREGATES_KNOWN + 10):
        store._aggregates(f"gone-{i}")
    assert len(store._has_aggregates) <= sqlite_module.AGGREGATES_KNOWN
    assert store._aggregates(job) is True and store._aggregates("j2") is False


def test_one_writer_at_a_time_among_this_process_connections(tmp_path: Path) -> None:
    """Connections of one process to one store share a writer lock, held for exactly the
    length of a write transaction: a thread waiting for another's commit wakes as it ends
    (instead of SQLite's busy handler sleeping between tries)."""
    import threading

    from oomguard.store.connection import writer_lock

    a = SqliteStore(tmp_path / "s.sqlite")
    b = SqliteStore(tmp_path / "." / "s.sqlite")
    other = SqliteStore(tmp_path / "t.sqlite")
    try:
        assert writer_lock(a.path) is writer_lock(b.path) is a._writer is b._writer
        assert other._writer is not a._writer
        order: list[str] = []
        with a.transaction() as db:
            db.execute("INSERT INTO counters (name, value) VALUES ('x', 1)")

            def write_b() -> None:
                with b.transaction() as db_b:
                    order.append("b in")
                    db_b.execute("UPDATE counters SET value = value + 1 WHERE name = 'x'")

            thread = threading.Thread(target=write_b)
            thread.start()
            thread.join(0.2)
            assert thread.is_alive() and order == []  # waits on the lock, not in SQLite
            order.append("a commits")
        thread.join(5)
        assert order == ["a commits", "b in"]
        assert a.db.execute("SELECT value FROM counters WHERE name = 'x'").fetchone()[0] == 2
        # A failed transaction releases the lock too.
        with pytest.raises(RuntimeError), a.transaction():
            raise RuntimeError("boom")
        free: list[bool] = []

        def try_lock() -> None:
            got = a._writer.acquire(blocking=False)
            free.append(got)
            if got:
                a._writer.release()

        probe = threading.Thread(target=try_lock)
        probe.start()
        probe.join(5)
        assert free == [True]
    finally:
        a.close()
        b.close()
        other.close()


def test_positional_queries_bind_the_same_values_as_the_named_ones(store: Store) -> None:
    """The hot path binds tuples (``POSITIONAL``): every named query has a positional twin
    whose placeholders take the row's values in their order; string literals (with a ``:``
    in them) stay as they are."""
    store = sql_store(store)
    from oomguard.store.queries import POSITIONAL, Positional, Q, SqlParams

    assert set(POSITIONAL) == {name for name, sql in Q.items() if ":" in sql}
    q = Positional("UPDATE t SET a = :a, b = ':b is text' WHERE id = :id AND c = :a")
    assert q.sql == "UPDATE t SET a = ?, b = ':b is text' WHERE id = ? AND c = ?"
    assert q.values({"id": 7, "a": 1, "unused": 0}) == (1, 7, 1)
    assert Positional("DELETE FROM t WHERE id = :id").values({"id": 3}) == (3,)
    # The same row through the named and the positional insert: the same stored row.
    job = _job(store, n=1)
    (task,) = store.take_ready(job, 1, 1)
    row: SqlParams = {
        "id": 1,
        "task_id": task.id,
        "n": 1,
        "scheduler_id": "s",
        "worker": "w",
        "pid": 9,
        "state": "running",
        "started_at": 1.5,
        "ended_at": None,
        "failure_class": None,
        "admitted_bytes": 10,
        "limit_bytes": 20,
        "peak_bytes": None,
        "evidence": "{}",
    }
    store.db.execute(Q["insert_attempt"], row)
    query = POSITIONAL["insert_attempt"]
    store.db.execute(query.sql, query.values(dict(row, id=2)))
    a, b = store.db.execute("SELECT * FROM attempts ORDER BY id").fetchall()
    assert a[1:] == b[1:] and (a[0], b[0]) == (1, 2)


def test_every_statement_is_named_once_and_described() -> None:
    """SQL lives in ``store/sql/*.sql`` only: each statement named once across the files,
    with a description line (procrastinate's ``queries.sql``)."""
    from importlib import resources

    from oomguard.store.queries import DESCRIPTIONS, Q, parse_named

    seen: dict[str, str] = {}
    for entry in (resources.files("oomguard.store") / "sql").iterdir():
        if entry.name.endswith(".sql") and entry.name != "schema.sql":
            for name in parse_named(entry.read_text()):
                assert name not in seen, (name, entry.name, seen.get(name))
                seen[name] = entry.name
    assert set(seen) == set(Q)
    assert not [name for name, about in DESCRIPTIONS.items() if not about]
    assert not [name for name, sql in Q.items() if "{" in sql]  # every expansion expanded


def test_the_open_states_are_the_models() -> None:
    """The task states that may still run are defined once (``jobs.model.OPEN_STATES``):
    ``{open_states}`` expands to them, and ``low_group`` (one indexed MIN per state) names
    each of them once."""
    import re

    from oomguard.jobs.model import OPEN_STATES
    from oomguard.store.queries import Q

    assert re.findall(r"state = '(\w+)'", Q["low_group"]) == list(OPEN_STATES)
    expanded = "(" + ", ".join(f"'{state}'" for state in OPEN_STATES) + ")"
    assert expanded in Q["active_jobs"] and expanded in Q["open_tasks_by_job"]


def _driver_errors(store: Store) -> tuple[type[BaseException], type[BaseException]]:
    """The driver's (refused statement, store unusable) errors of ``store``'s backend."""
    if is_url(store.location):
        import psycopg

        return psycopg.IntegrityError, psycopg.errors.ReadOnlySqlTransaction
    return sqlite3.IntegrityError, sqlite3.OperationalError


def test_sqlite_errors_leave_the_store_as_store_errors(store: Store, tmp_path: Path) -> None:
    """Nothing above ``store/`` sees the driver (``sqlite3``, psycopg): a failing store is
    ``StoreUnavailable`` (the scheduler stops on it), a statement the database refuses a
    plain ``StoreError`` (the scheduler fails only the task that brought it)."""
    from oomguard.errors import StoreError, StoreUnavailable

    integrity, unusable = _driver_errors(store)
    _job(store, n=1)
    with pytest.raises(StoreError) as refused:
        store.create_job("j1", name="again", fn="m:f", agg=None)
    assert not isinstance(refused.value, StoreUnavailable)
    assert isinstance(refused.value.__cause__, integrity)
    reader = open_store(store.location, readonly=True)
    try:
        assert reader.job("j1").name == "t"
        with pytest.raises(StoreUnavailable) as failed:
            reader.admin.set_meta("k", "v")
        assert isinstance(failed.value.__cause__, unusable)
        rows = reader.queries.result_rows("j1")  # a generator: translated as it runs
        reader.close()
        with pytest.raises(StoreError):
            next(rows)
    finally:
        reader.close()


def test_open_store_picks_the_backend_and_hides_the_password(tmp_path: Path) -> None:
    """``open_store`` is the one place that picks a backend: a path is SQLite, a
    ``postgresql://`` URL PostgreSQL; a database it cannot reach is ``StoreUnavailable``,
    and no message shows the URL's password."""
    from oomguard.errors import StoreError, StoreUnavailable

    pytest.importorskip("psycopg")
    with pytest.raises(StoreUnavailable) as refused:
        open_store("postgresql://user:secret@/oomguard?host=/nonexistent&connect_timeout=1")
    assert "secret" not in str(refused.value) and "secret" not in repr(refused.value.__dict__)
    with open_store(tmp_path / "s.sqlite") as store:
        assert isinstance(store, SqliteStore) and not is_url(store.location)
    with pytest.raises(StoreError, match="no store"):
        open_store(tmp_path / "missing.sqlite", create=False)


def test_a_postgresql_url_opens_a_postgresql_store(postgres_url: str) -> None:
    from oomguard.errors import StoreError
    from oomguard.store.postgres.store import PostgresStore

    with pytest.raises(StoreError, match="no store"):
        open_store(postgres_url, create=False)
    with open_store(postgres_url.replace("postgresql://", "postgres://")) as store:
        assert isinstance(store, PostgresStore) and store.location.startswith("postgres://")
    with open_store(postgres_url, readonly=True) as reader:
        assert reader.jobs() == []


# -- replicas: several schedulers on one store (issue 29) --------------------------------


def _end(store: Store, task: TaskRow, attempt_id: int, sid: str) -> int:
    """The writes of attempt ``attempt_id`` succeeding, applied as scheduler ``sid``'s."""
    writes = PendingWrites()
    writes.end_attempt(
        attempt_id,
        task.id,
        state="succeeded",
        failure_class=None,
        evidence=None,
        peak_bytes=None,
        pid=1,
        worker="w1",
        ended_at=time.time(),
    )
    writes.result(
        task.id,
        job_id=task.job_id,
        attempt_id=attempt_id,
        value=b"v",
        kind=task.kind,
        grp=task.grp,
        n=1,
        now=time.time(),
    )
    return store.apply(writes.take(), scheduler_id=sid)


def test_replicas_coexist_and_exclusive_schedulers_refuse_them(store_location: str) -> None:
    a, b, c = (open_store(store_location) for _ in range(3))
    try:
        a.leases.register("a", lease_ttl=30, replica=True)
        b.leases.register("b", lease_ttl=30, replica=True)  # a second live replica: fine
        with pytest.raises(StoreBusyError, match="live replica"):
            c.leases.register("c", lease_ttl=30)  # an exclusive one refuses live replicas
        a.leases.unregister("a")
        b.leases.unregister("b")
        c.leases.register("c", lease_ttl=30)
        with pytest.raises(StoreBusyError, match="only with replicas"):
            a.leases.register("a2", lease_ttl=30, replica=True)  # ... and they refuse it
    finally:
        for s in (a, b, c):
            s.close()


def test_claims_name_their_owner_and_never_overlap(store_location: str) -> None:
    a, b = open_store(store_location), open_store(store_location)
    try:
        _job(a, n=10)
        a.leases.register("a", lease_ttl=30, replica=True)
        b.leases.register("b", lease_ttl=30, replica=True)
        mine = a.take_ready("j1", 4, 100, owner="a")
        theirs = b.take_ready("j1", 100, 100, owner="b")
        assert len(mine) == 4 and len(theirs) == 6
        assert not {t.id for t in mine} & {t.id for t in theirs}
        assert a.take_ready("j1", 100, 100, owner="a") == []
    finally:
        a.close()
        b.close()


def test_a_dead_replica_is_taken_over_in_one_step(store_location: str) -> None:
    a, b = open_store(store_location), open_store(store_location)
    try:
        _job(a, n=4)
        a.leases.register("a", lease_ttl=0.2, replica=True)
        b.leases.register("b", lease_ttl=0.2, replica=True)
        t0, t1 = a.take_ready("j1", 2, 100, owner="a")
        (t2,) = b.take_ready("j1", 1, 100, owner="b")
        _claim(a, t0, 1, sid="a")
        _claim(b, t2, 2, sid="b")
        writes = PendingWrites()
        writes.acquire_lock("k", 1, t0.id)
        a.apply(writes.take(), scheduler_id="a")
        # While a's heartbeat is fresh nothing is taken, however long it has run.
        assert b.leases.take_over_dead("b", lease_ttl=30) == []
        time.sleep(0.3)  # past a's lease of 0.2 s, without a heartbeat
        b.leases.heartbeat("b")
        (taken,) = b.leases.take_over_dead("b", lease_ttl=0.2)
        assert taken.scheduler_id == "a" and "heartbeat" in taken.reason
        assert taken.recovery.lost_attempts == 1
        assert taken.recovery.requeued_tasks == 2  # t0 (running) and t1 (queued)
        assert taken.recovery.released_locks == 1
        (attempt,) = b.queries.attempts(t0.id)
        assert attempt.state == "failed" and attempt.failure_class == "lost"
        assert isinstance(attempt.evidence, dict) and attempt.evidence["scheduler_id"] == "a"
        # b's own claim and attempt are untouched; a's tasks are ready for anyone.
        assert b.task_state(t2.id) == "running"
        assert (b.queries.attempts(t2.id))[0].state == "running"
        assert b.task_state(t0.id) == b.task_state(t1.id) == "ready"
        assert b.leases.take_over_dead("b", lease_ttl=0.2) == []  # once
    finally:
        a.close()
        b.close()


def test_a_replica_taken_over_records_nothing(store_location: str) -> None:
    a, b = open_store(store_location), open_store(store_location)
    try:
        _job(a, n=2)
        a.leases.register("a", lease_ttl=0.2, replica=True)
        b.leases.register("b", lease_ttl=0.2, replica=True)
        t0, t1 = a.take_ready("j1", 2, 100, owner="a")
        _claim(a, t0, 1, sid="a")
        time.sleep(0.3)
        b.leases.heartbeat("b")
        assert len(b.leases.take_over_dead("b", lease_ttl=0.2)) == 1
        # b runs t0 again and stores its result ...
        (again,) = b.take_ready("j1", 1, 100, owner="b")
        assert again.id == t0.id
        _claim(b, again, 2, sid="b")
        # ... and what a still had of it is refused: the end, the result, the task's state.
        with pytest.raises(TakenOverError):
            _end(a, t0, 1, "a")
        assert b.queries.counter("fenced_writes") == 2
        assert b.task_state(t0.id) == "running"
        assert [r.state for r in b.queries.attempts(t0.id)] == ["failed", "running"]
        assert _end(b, again, 2, "b") == 0
        assert b.task_state(t0.id) == "succeeded"
        # a claims nothing more, and its heartbeat says it was taken over.
        with pytest.raises(TakenOverError):
            a.take_ready("j1", 10, 100, owner="a")
        assert b.task_state(t1.id) == "ready"
        with pytest.raises(TakenOverError):
            a.leases.heartbeat("a")
    finally:
        a.close()
        b.close()


def test_an_attempt_not_running_under_its_writer_is_fenced(store: Store) -> None:
    _job(store, n=1)
    store.leases.register("a", lease_ttl=30, replica=True)
    (task,) = store.take_ready("j1", 1, 100, owner="a")
    _claim(store, task, 1, sid="other")  # not a's attempt
    with pytest.raises(TakenOverError):
        _end(store, task, 1, "a")
    assert store.queries.counter("fenced_writes") == 2
    assert store.task_state(task.id) == "running"


def test_replicas_reserve_disjoint_attempt_ids(store_location: str) -> None:
    a, b = open_store(store_location), open_store(store_location)
    try:
        _job(a, n=1)
        (task,) = a.take_ready("j1", 1, 100)
        _claim(a, task, 7, sid="x")  # an attempt already numbered 7
        first = a.leases.reserve_attempt_ids(100)
        second = b.leases.reserve_attempt_ids(100)
        assert first == 8  # above every attempt stored
        assert second >= first + 100  # no overlap
    finally:
        a.close()
        b.close()


def test_a_task_lost_too_often_in_takeovers_fails_as_lost(store_location: str) -> None:
    a = open_store(store_location)
    try:
        _job(a, n=1)
        a.leases.register("live", lease_ttl=0.2, replica=True)
        for n in range(1, 4):
            dead = open_store(store_location)
            dead.leases.register(f"dead{n}", lease_ttl=0.2, replica=True)
            (task,) = dead.take_ready("j1", 1, 100, owner=f"dead{n}")
            _claim(dead, task, n, sid=f"dead{n}")
            dead.close()
            time.sleep(0.3)
            a.leases.heartbeat("live")
            (taken,) = a.leases.take_over_dead("live", lease_ttl=0.2, lost_retries=2)
        assert taken.recovery.failed_lost == 1  # the third loss, with lost_retries 2
        assert a.task_state(task.id) == "failed"
    finally:
        a.close()


def test_one_replica_at_a_time_holds_a_receivers_cursor(store_location: str) -> None:
    a, b = open_store(store_location), open_store(store_location)
    try:
        a.leases.register("a", lease_ttl=0.2, replica=True)
        b.leases.register("b", lease_ttl=0.2, replica=True)
        a.outbox.add(1.0, "job", "{}")
        assert a.outbox.hold("r", "a", 30) == 1  # a new receiver starts after what is there
        assert b.outbox.hold("r", "b", 30) is None  # a delivers to it; b does not
        assert a.outbox.hold("r", "a", 30) == 1  # renewed
        a.outbox.advance("r", 5)
        a.leases.unregister("a")  # a stops: its holds end
        assert b.outbox.hold("r", "b", 30) == 5
        # A holder found dead lets go of its holds at its takeover.
        assert b.outbox.hold("r2", "b", 30) is not None
        c = open_store(store_location)
        try:
            c.leases.register("c", lease_ttl=0.2, replica=True)
            assert c.outbox.hold("r2", "c", 30) is None  # b lives and holds it
            time.sleep(0.3)  # b's lease lapses
            c.leases.heartbeat("c")
            assert [t.scheduler_id for t in c.leases.take_over_dead("c", 0.2)] == ["b"]
            assert c.outbox.hold("r2", "c", 30) is not None
        finally:
            c.close()
    finally:
        a.close()
        b.close()


def test_each_job_change_is_told_by_one_replica(store_location: str) -> None:
    a, b = open_store(store_location), open_store(store_location)
    try:
        _job(a, n=1)
        assert a.leases.claim_job_notice("j1", "running")
        assert not b.leases.claim_job_notice("j1", "running")  # told already
        assert b.leases.claim_job_notice("j1", "succeeded")
        assert not a.leases.claim_job_notice("j1", "succeeded")
    finally:
        a.close()
        b.close()


def test_replicas_take_a_lock_one_at_a_time(store_location: str) -> None:
    a, b = open_store(store_location), open_store(store_location)
    try:
        _job(a, n=2)
        a.leases.register("a", lease_ttl=0.2, replica=True)
        b.leases.register("b", lease_ttl=0.2, replica=True)
        t0, t1 = a.take_ready("j1", 2, 100, owner="a")
        assert a.leases.take_lock("k", 1, t0.id, "a")
        assert not b.leases.take_lock("k", 2, t1.id, "b")  # a holds it
        a.leases.drop_lock("k", 1, "a")  # its attempt did not start
        assert b.leases.take_lock("k", 2, t1.id, "b")
        # The attempt's end releases it, as an exclusive scheduler's lock.
        writes = PendingWrites()
        writes.release_lock(2, t1.id)
        b.apply(writes.take(), scheduler_id="b")
        assert a.leases.take_lock("k", 3, t0.id, "a")
        # A takeover releases the locks the dead replica took, started or not.
        time.sleep(0.3)
        b.leases.heartbeat("b")
        (taken,) = b.leases.take_over_dead("b", 0.2)
        assert taken.recovery.released_locks == 1
        assert b.leases.take_lock("k", 4, t1.id, "b")
    finally:
        a.close()
        b.close()
