"""Wake-ups on PostgreSQL (issue 29): a committed submission sends a ``NOTIFY``, and every
scheduler's listener (store/postgres/listener.py) wakes its loop, so a replica starts tasks
another process submitted at once, not at its next poll (``idle_wait``). Real PostgreSQL
(tests/fixtures/postgres.py), real stores, a real ``oomguard serve --replica``."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from fixtures.polling import wait_for
from fixtures.serve_process import serve
from oomguard.store.postgres.listener import Listener
from oomguard.store.postgres.store import PostgresStore
from oomguard.store.records import NewTask, StoredSpec

pytestmark = pytest.mark.timeout(120)


class Wakes:
    """Counts the listener's calls (from its thread)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.count += 1


def _add_job(store: PostgresStore, tasks: int) -> str:
    """A job of ``tasks`` no-op tasks written as a submission writes it: by a plain store
    writer (this test process), not through any scheduler."""
    job_id = uuid.uuid4().hex[:12]
    fn = "oomguard.examples:noop"
    store.create_job(job_id, name="noop", fn=fn, agg=None, spec=StoredSpec(source="http"))
    rows = [
        NewTask(job_id=job_id, grp=i, kind="task", fn=fn, params=f'{{"x": {i}}}')
        for i in range(tasks)
    ]
    store.add_tasks(rows, job_id=job_id, groups=tasks)
    store.set_job_groups(job_id, tasks, sealed=True)
    return job_id


def _listening(listener: Listener, times: int) -> None:
    wait_for(lambda: listener.listening >= times, what=f"the listener listening ({times})")


def test_a_submission_committed_by_one_store_wakes_another_stores_listener(
    postgres_url: str,
) -> None:
    with PostgresStore(postgres_url) as writer, PostgresStore(postgres_url) as scheduler:
        wakes = Wakes()
        listener = scheduler.listen(wakes)
        assert isinstance(listener, Listener)
        try:
            _listening(listener, 1)
            assert wakes.count == 0  # listening for the first time wakes nobody
            _add_job(writer, 3)
            wait_for(lambda: wakes.count >= 1, what="the NOTIFY of add_tasks")
        finally:
            listener.close()
        assert not listener._thread.is_alive()


def test_a_listener_whose_connection_breaks_listens_again_and_wakes_once(
    postgres_url: str,
) -> None:
    """Its backend terminated by the server: it connects again, wakes the loop (a NOTIFY
    may have been missed meanwhile), and hears the next submission."""
    with PostgresStore(postgres_url) as writer, PostgresStore(postgres_url) as scheduler:
        wakes = Wakes()
        listener = scheduler.listen(wakes)
        assert isinstance(listener, Listener)
        try:
            _listening(listener, 1)
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'oomguard listener' AND datname = current_database()"
                ).fetchall()
            assert ended == [(True,)]
            _listening(listener, 2)
            wait_for(lambda: wakes.count >= 1, what="the wake after listening again")
            before = wakes.count
            _add_job(writer, 1)
            wait_for(lambda: wakes.count > before, what="the NOTIFY after reconnecting")
        finally:
            listener.close()


def test_the_store_sessions_end_a_transaction_left_idle(postgres_url: str) -> None:
    """A session idle in a transaction past the timeout is ended by the server (a frozen
    replica cannot hold its row locks for ever): the setting every store session has."""
    with PostgresStore(postgres_url) as store:
        row = store.db.execute("SHOW idle_in_transaction_session_timeout").fetchone()
    assert row == ("1min",)


def test_a_replica_starts_at_once_a_job_another_process_submitted(
    tmp_path: Path, postgres_url: str
) -> None:
    """A replica whose loop would sleep 30 s when idle starts a job this process writes to
    the database (no scheduler here) well before that: woken by the NOTIFY. Without it the
    replica would find the job only at its next poll, 30 s on, past the wait below."""
    config = tmp_path / "oomguard.toml"
    config.write_text("idle_wait = 30.0\n")
    args = ("--replica", "--workers", "1", "--config", str(config))
    with (
        serve(tmp_path, *args, name="replica", location=postgres_url) as replica,
        psycopg.connect(postgres_url, autocommit=True) as conn,
    ):
        ids = conn.execute("SELECT id FROM schedulers WHERE pid = %s", (replica.pid,)).fetchall()
        assert len(ids) == 1, ids
        scheduler_id = ids[0][0]
        # Wait for its listener's session: a NOTIFY sent before it listens is heard by
        # nobody (the job would wait for the poll).
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity "
                    "WHERE application_name = 'oomguard listener'"
                ).fetchone()
                == (1,)
            ),
            what="the replica's listener",
        )
        with PostgresStore(postgres_url) as writer:
            job_id = _add_job(writer, 2)

        def started() -> list[tuple[object, ...]]:
            return conn.execute(
                "SELECT a.scheduler_id FROM attempts a JOIN tasks t ON t.id = a.task_id "
                "WHERE t.job_id = %s",
                (job_id,),
            ).fetchall()

        # Far less than the 30 s poll: only a wake-up gets the job started this soon.
        rows = wait_for(started, timeout=10.0, what="the replica starting the job")
        assert {r[0] for r in rows} == {scheduler_id}
