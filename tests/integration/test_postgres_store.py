"""The PostgreSQL store against a real throwaway cluster (fixtures/postgres.py): every
statement runs in PostgreSQL's dialect, the schema is SQLite's, migrations add up and
never race, large payloads live in the database."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from oomguard.store import open_store
from oomguard.store.postgres.connection import PgConnection, connect
from oomguard.store.postgres.dialect import OWN, PG
from oomguard.store.postgres.schema import MIGRATIONS, SCHEMA_VERSION, migrate
from oomguard.store.postgres.store import PostgresStore
from oomguard.store.queries import Q
from oomguard.store.records import NewTask
from oomguard.store.sqlite import SqliteStore

#: statements that are a transaction's own bounds, or run outside any
_OUTSIDE = {"begin_immediate", "commit", "rollback", "vacuum"}


def _nulls(sql: str) -> tuple[None, ...] | dict[str, None]:
    names = re.findall(r"(?<![:\w]):(\w+)", re.sub(r"'(?:[^']|'')*'", "''", sql))
    if names:
        return dict.fromkeys(names)
    return (None,) * re.sub(r"'(?:[^']|'')*'", "''", sql).count("?")


def test_every_statement_runs_on_postgresql(postgres_url: str) -> None:
    """Each named statement (translated, or its override) runs on a migrated database with
    NULL parameters, each in a transaction rolled back (a write also as an executemany,
    its parameters bound on the server): PostgreSQL parses and types every one. Only a
    constraint may refuse a NULL (an INSERT of a NOT NULL column)."""
    import psycopg

    PostgresStore(postgres_url).close()
    db = connect(postgres_url, readonly=False)
    refused = {}
    try:
        for name, sql in {**Q, **OWN}.items():
            if name in _OUTSIDE:
                continue
            # A write may come in an executemany, its parameters bound on the server:
            # typed by their columns, not as literals.
            write = sql.split()[0] in ("INSERT", "UPDATE", "DELETE")
            for many in (False, True) if write else (False,):
                db.execute("BEGIN")
                try:
                    if many:
                        db.executemany(sql, [_nulls(sql)] * 2)
                    else:
                        db.execute(sql, _nulls(sql)).fetchall()
                except Exception as err:
                    if not isinstance(err.__cause__, psycopg.IntegrityError):
                        refused[name] = str(err)
                finally:
                    db.execute("ROLLBACK")
        db.execute(Q["vacuum"])
    finally:
        db.close()
    assert refused == {}


def _pg_schema(url: str) -> tuple[dict[str, list[str]], set[str]]:
    db = connect(url, readonly=True)
    try:
        tables: dict[str, list[str]] = {}
        for table, column, *_ in db.execute(OWN["pg_columns"]):
            tables.setdefault(table, []).append(column)
        indexes = {name for _, name, _ in db.execute(OWN["pg_indexes"])}
    finally:
        db.close()
    return tables, indexes


def _pg_shape(url: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    db = connect(url, readonly=True)
    try:
        return list(db.execute(OWN["pg_columns"])), list(db.execute(OWN["pg_indexes"]))
    finally:
        db.close()


def test_the_schema_is_sqlites(postgres_url: str, tmp_path: Path) -> None:
    """A fresh PostgreSQL store has SQLite's tables with the same columns and indexes
    (and its blobs table: SQLite keeps blobs in files)."""
    PostgresStore(postgres_url).close()
    tables, indexes = _pg_schema(postgres_url)
    with SqliteStore(tmp_path / "s.sqlite") as lite:
        lite_tables = {
            name: sorted(c[1] for c in lite.db.execute(f"PRAGMA table_info({name})"))
            for (name,) in lite.db.execute(Q["tables"])
            if not name.startswith("sqlite_")
        }
        lite_indexes = {
            r[0]
            for r in lite.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
    assert {t: sorted(c) for t, c in tables.items() if t != "blobs"} == lite_tables
    assert lite_indexes <= indexes  # PostgreSQL names its primary keys' indexes too
    assert sorted(tables["blobs"]) == ["data", "name", "touched_at"]


def test_a_database_migrated_step_by_step_equals_a_fresh_one(postgres_cluster: object) -> None:
    """Migrating version by version, a store at each older version with a row in it,
    reaches the schema of a fresh store (information_schema columns, pg_indexes) and keeps
    its rows."""
    from fixtures.postgres import Cluster

    assert isinstance(postgres_cluster, Cluster)
    fresh = postgres_cluster.create_database()
    PostgresStore(fresh).close()
    assert len(MIGRATIONS) >= 2
    for version, _ in MIGRATIONS[:-1]:
        url = postgres_cluster.create_database()
        conn = PgConnection(connect(url, readonly=False), url)
        assert migrate(conn, "old", up_to=version) == version
        conn.db.execute(
            "INSERT INTO jobs (id, name, fn, spec, created_at) VALUES ('old', 'n', 'm:f', '{}', 0)"
        )
        conn.close()
        with PostgresStore(url) as store:
            assert store.queries.meta("schema_version") == str(SCHEMA_VERSION)
            assert store.job("old").name == "n"
        assert _pg_shape(url) == _pg_shape(fresh)


def test_two_processes_opening_a_fresh_database_at_once_do_not_race(postgres_url: str) -> None:
    """The migrations run under an advisory lock: processes opening one fresh database at
    the same moment migrate it once, one after the other, and all open it."""
    code = (
        "import sys; from oomguard.store import open_store; "
        "s = open_store(sys.argv[1]); print(s.queries.meta('schema_version')); s.close()"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, postgres_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    assert {out.strip() for out, _ in outs} == {str(SCHEMA_VERSION)}


def test_large_payloads_live_in_the_database(postgres_url: str) -> None:
    """Large results and params go to the blobs table, not to files: another process
    (another host) reads them back; garbage collection removes only what no row uses."""
    from oomguard.store.records import NewTask

    store = open_store(postgres_url)
    assert isinstance(store, PostgresStore)
    try:
        big = b"x" * (3 * 1024 * 1024)
        name = store.blobs.put(big)
        orphan = store.blobs.put(b"nobody refers to me")
        stored = store.blobs.params_row({"blob": "y" * (200 * 1024)})
        store.create_job("j", name="t", fn="m:f", agg=None)
        store.add_tasks(
            [
                NewTask(
                    job_id="j",
                    grp=0,
                    kind="task",
                    fn="m:f",
                    state="ready",
                    params=stored.params,
                    params_ref=stored.params_ref,
                    payload_ref=name,
                )
            ]
        )
        other = open_store(postgres_url)
        try:
            assert other.blobs.get(name) == big
            assert other.queries.task(1) is not None
        finally:
            other.close()
        young = store.blobs.collect_garbage(min_age=3600)
        assert (young.blobs, young.young, young.removed) == (3, 1, 0)
        report = store.blobs.collect_garbage(min_age=0)
        assert (report.referenced, report.removed) == (2, 1)
        from oomguard.errors import BlobMissingError

        with pytest.raises(BlobMissingError):
            store.blobs.get(orphan)
        assert store.blobs.get(name) == big
    finally:
        store.close()


def _session(url: str) -> Any:
    import psycopg

    conn = psycopg.connect(url)  # transactions: the first statement begins one
    conn.execute("SET lock_timeout = '1s'")
    conn.commit()
    return conn


def test_replicas_races_are_closed_by_row_locks(postgres_url: str) -> None:
    """READ COMMITTED, two sessions as two replicas: a takeover waits for a write
    transaction that read the fence (and the fence, run after the takeover commits, sees
    it); a claim skips the rows another claim holds; two takeovers of one scheduler change
    it once."""
    import psycopg

    store = PostgresStore(postgres_url)
    store.leases.register("a", 30.0, replica=True)
    store.leases.register("b", 30.0, replica=True)
    store.create_job("j", name="t", fn="m:f", agg=None)
    store.add_tasks(
        [NewTask(job_id="j", grp=i, kind="task", fn="m:f", state="ready") for i in range(4)]
    )
    store.close()
    one, two = _session(postgres_url), _session(postgres_url)
    try:
        take_over = {"id": "a", "by": "b", "now": 1.0}
        # Replica a's write transaction read its fence: b's takeover of a waits for it.
        assert one.execute(PG["scheduler_fence"], ("a",)).fetchall() == []
        with pytest.raises(psycopg.errors.LockNotAvailable):
            two.execute(PG["take_over_scheduler"], take_over)
        two.rollback()
        one.commit()
        # b takes a over (not committed yet): a's fence waits, then refuses.
        assert two.execute(PG["take_over_scheduler"], take_over).rowcount == 1
        with pytest.raises(psycopg.errors.LockNotAvailable):
            one.execute(PG["scheduler_fence"], ("a",))
        one.rollback()
        # A second takeover of a, racing the first, changes nothing once it commits.
        three = _session(postgres_url)
        try:
            three.execute("SET lock_timeout = 0")
            done: list[int] = []
            racer = threading.Thread(
                target=lambda: done.append(
                    three.execute(PG["take_over_scheduler"], {**take_over, "by": "c"}).rowcount
                )
            )
            racer.start()
            two.commit()
            racer.join(30)
            three.commit()
            assert done == [0]
        finally:
            three.close()
        assert one.execute(PG["scheduler_fence"], ("a",)).fetchall() == [("b",)]
        one.rollback()
        # Two claims at once take different ready tasks.
        params = {"job_id": "j", "now": 2e9, "grp_limit": 10, "limit": 2}
        first = {r[0] for r in one.execute(PG["take_ready"], params)}
        second = {r[0] for r in two.execute(PG["take_ready"], params)}
        assert len(first) == 2 and len(second) == 2 and not first & second
    finally:
        one.close()
        two.close()
