"""What users do to a store: retry failed tasks, cancel, forget a finished job, meta keys
and counters.

Composed into :class:`~oomguard.store.sqlite.SqliteStore` as ``store.admin``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomguard.errors import JobActiveError
from oomguard.store.db import Db
from oomguard.store.failures import translated
from oomguard.store.queries import Q

if TYPE_CHECKING:
    from oomguard.store.connection import Connection
    from oomguard.store.views import Queries

#: tasks deleted per transaction by forget_job, so a live scheduler is never blocked long
FORGET_CHUNK = 20_000


@dataclass(frozen=True)
class RetryChoice:
    """Which failed tasks of a job a dashboard retry makes ready again: those of
    ``classes`` (None: any class), of ``task_ids`` (None: any), of ``memory_key`` (None:
    any key); ``memory``: their declared memory is raised to at least this (bytes; None:
    kept). The scheduler takes a declaration as a floor of the key's estimate."""

    classes: tuple[str, ...] | None = None
    task_ids: tuple[int, ...] | None = None
    memory_key: str | None = None
    memory: int | None = None

    def params(self, job_id: str) -> dict[str, object]:
        return {
            "job_id": job_id,
            "classes": None if self.classes is None else json.dumps(list(self.classes)),
            "ids": None if self.task_ids is None else json.dumps(list(self.task_ids)),
            "memory_key": self.memory_key,
            "memory": self.memory,
        }


@translated
class Admin:
    def __init__(self, conn: Connection, queries: Queries) -> None:
        self._conn = conn
        self._queries = queries

    def set_meta(self, key: str, value: str) -> None:
        with self._conn.transaction() as db:
            db.execute(Q["set_meta"], (key, value))

    def add_counter(self, name: str, delta: int) -> None:
        with self._conn.transaction() as db:
            db.execute(
                Q["add_counter"],
                (name, delta),
            )

    def retry_failed(self, job_id: str) -> int:
        """Make the job's failed tasks ready again with fresh retry counts."""
        now = time.time()
        with self._conn.transaction() as db:
            n = db.execute(
                Q["retry_failed_tasks"],
                (now, job_id),
            ).rowcount
            # Aggregations that failed because a replicate did wait for it again.
            n += db.execute(
                Q["retry_failed_aggregates"],
                (now, job_id),
            ).rowcount
            db.execute(
                Q["insert_event"],
                {
                    "ts": now,
                    "job_id": job_id,
                    "task_id": None,
                    "kind": "retry_failed",
                    "data": json.dumps({"tasks": n}),
                },
            )
            if n:
                self._conn.tasks_ready(db)
        return int(n)

    def count_chosen(self, job_id: str, choice: RetryChoice) -> int:
        """How many tasks :meth:`retry_chosen` would make ready now (with an empty
        choice: how many :meth:`retry_failed` would, its aggregations included)."""
        row = self._conn.db.execute(Q["count_chosen_tasks"], choice.params(job_id)).fetchone()
        return int(row[0])

    def retry_chosen(self, job_id: str, choice: RetryChoice) -> int:
        """Make the job's failed tasks that ``choice`` names ready again with fresh retry
        counts (as :meth:`retry_failed` does), raising their declared memory if it says."""
        now = time.time()
        with self._conn.transaction() as db:
            n = db.execute(Q["retry_chosen_tasks"], {**choice.params(job_id), "now": now}).rowcount
            db.execute(
                Q["insert_event"],
                {
                    "ts": now,
                    "job_id": job_id,
                    "task_id": None,
                    "kind": "retry_failed",
                    "data": json.dumps(
                        {
                            "tasks": n,
                            "classes": choice.classes,
                            "memory_key": choice.memory_key,
                            "memory": choice.memory,
                        }
                    ),
                },
            )
            if n:
                self._conn.tasks_ready(db)
        return int(n)

    def count_open(self, job_id: str) -> int:
        """How many tasks :meth:`cancel` would cancel now (the job's open tasks)."""
        return int(self._conn.db.execute(Q["count_open_tasks"], (job_id,)).fetchone()[0])

    def cancel(self, job_id: str) -> int:
        """Cancel the job's unfinished tasks (a running attempt is stopped by its scheduler)."""
        now = time.time()
        with self._conn.transaction() as db:
            n = db.execute(
                Q["cancel_tasks"],
                (now, job_id),
            ).rowcount
            db.execute(Q["cancel_job"], (job_id,))
            db.execute(
                Q["insert_event"],
                {
                    "ts": now,
                    "job_id": job_id,
                    "task_id": None,
                    "kind": "job_cancelled",
                    "data": json.dumps({"tasks": n}),
                },
            )
        return int(n)

    def stop_job(self, job_id: str, cause: str) -> int:
        """Stop a job that cannot run (its first attempts all failed loading its task):
        its unfinished tasks are cancelled with ``cause`` as their error, the job's state is
        ``stopped`` (shown as ``failed``), and ``cause`` is kept in a ``job_stopped`` event.
        Running the same sweep again reopens it (:meth:`reopen_stopped`)."""
        now = time.time()
        with self._conn.transaction() as db:
            n = db.execute(
                Q["stop_tasks"],
                (f"not run: the job {cause}", now, job_id),
            ).rowcount
            db.execute(
                Q["stop_job"],
                (job_id,),
            )
            db.execute(
                Q["insert_event"],
                {
                    "ts": now,
                    "job_id": job_id,
                    "task_id": None,
                    "kind": "job_stopped",
                    "data": json.dumps({"tasks": n, "cause": cause}),
                },
            )
        return int(n)

    def stop_cause(self, job_id: str) -> str | None:
        """Why the job was stopped (:meth:`stop_job`), or None if it was not."""
        return self._queries.stop_cause(job_id)

    def reopen_stopped(self, job_id: str) -> int:
        """Make a stopped job runnable again (its task was fixed): the tasks it cancelled
        and those that failed become ready with fresh retry counts; the job is open."""
        now = time.time()
        with self._conn.transaction() as db:
            n = db.execute(
                Q["reopen_tasks"],
                (now, job_id),
            ).rowcount
            # Aggregations failed because a replicate failed: they wait for it again.
            db.execute(
                Q["reopen_aggregates"],
                (job_id,),
            )
            db.execute(Q["reopen_job"], (job_id,))
            db.execute(
                Q["insert_event"],
                {
                    "ts": now,
                    "job_id": job_id,
                    "task_id": None,
                    "kind": "job_reopened",
                    "data": json.dumps({"tasks": n}),
                },
            )
            self._conn.tasks_ready(db)
        return int(n)

    def forget_job(self, job_id: str, force: bool = False) -> dict[str, int]:
        """Delete a finished job's rows: tasks, attempts, results, parts, events, samples.

        Refused while the job has unfinished tasks or running attempts, and (unless
        ``force``) while some of its results are not yet in its Parquet output. The
        Parquet files are the user's and stay. Rows go in chunks so a live scheduler on
        the store is never blocked long; the job row goes last, so a forget that is
        interrupted is finished by running it again. Blob files the job used are freed by
        :meth:`~oomguard.store.blobs.BlobFiles.collect_garbage`.
        """
        counts = {"tasks": 0, "attempts": 0, "results": 0, "events": 0}
        while True:
            with self._conn.transaction() as db:
                # Checked in the transaction that deletes: a job retried, or results
                # stored, between a check and the delete are never lost.
                self._check_forgettable(db, job_id, force)
                ids = [r[0] for r in db.execute(Q["forget_chunk"], (job_id, FORGET_CHUNK))]
                if not ids:
                    break
                chunk = (json.dumps(ids),)
                counts["attempts"] += db.execute(
                    Q["forget_attempts"],
                    chunk,
                ).rowcount
                counts["results"] += db.execute(
                    Q["forget_results"],
                    chunk,
                ).rowcount
                db.execute(Q["forget_locks"], chunk)
                counts["tasks"] += db.execute(Q["forget_tasks"], chunk).rowcount
        with self._conn.transaction() as db:
            counts["events"] = db.execute(Q["forget_job_events"], (job_id,)).rowcount
            db.execute(Q["forget_job_parts"], (job_id,))
            db.execute(Q["forget_job_samples"], (job_id,))
            db.execute(Q["forget_job_row"], (job_id,))
            db.execute(
                Q["insert_event"],
                {
                    "ts": time.time(),
                    "job_id": None,
                    "task_id": None,
                    "kind": "job_forgotten",
                    "data": json.dumps({"job_id": job_id, **counts}),
                },
            )
        return counts

    def _check_forgettable(self, db: Db, job_id: str, force: bool) -> None:
        """JobActiveError while the job has work in flight, or (unless ``force``) results
        not yet in its Parquet output."""
        row = db.execute(
            Q["job_in_flight"],
            (job_id, job_id),
        ).fetchone()
        unfinished, running = int(row[0]), int(row[1])
        if unfinished or running:
            raise JobActiveError(
                f"job {job_id} has {unfinished} unfinished task(s) and {running} running "
                f"attempt(s); cancel it first (oomguard cancel {job_id}) and let its scheduler "
                "stop them",
                job_id=job_id,
            )
        unwritten = self._queries.unwritten_parts(job_id)
        if unwritten and not force:
            raise JobActiveError(
                f"job {job_id} has {unwritten} result(s) not yet written to its Parquet output; "
                "start a scheduler on this store to write them, or pass --force to drop them",
                job_id=job_id,
            )


@translated
class Retention:
    """What retention reads and deletes (``serve --retention``, ``gc --vacuum``): composed
    into :class:`~oomguard.store.sqlite.SqliteStore` as ``store.retention``. Each method
    is one short transaction, so a live scheduler on the store is never blocked long."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def expired_jobs(self, cutoff: float, limit: int) -> list[str]:
        """Up to ``limit`` finished jobs (sealed or cancelled, no open task) whose last
        task changed before ``cutoff`` (a job is older than its tasks: created_at first)."""
        rows = self._conn.db.execute(
            Q["expired_jobs"],
            (cutoff, cutoff, limit),
        ).fetchall()
        return [r[0] for r in rows]

    def release_finished(self) -> int:
        """Delete the lock rows still held by finished or cancelled tasks (a task's
        dependencies are a count on its own row, so these are the rows a finished task
        can leave behind); the number deleted."""
        with self._conn.transaction() as db:
            n = db.execute(Q["release_finished_locks"]).rowcount
        return int(n)

    def forget_events(self, cutoff: float) -> int:
        """Delete store-wide events (``job_forgotten`` and the like) older than ``cutoff``."""
        with self._conn.transaction() as db:
            n = db.execute(Q["forget_old_events"], (cutoff,)).rowcount
        return int(n)

    def vacuum(self) -> tuple[int, int]:
        """Compact the SQLite file (``VACUUM``, then a WAL checkpoint): its size in bytes
        before and after. Needs free disk of about the store's size; it waits for (and
        then blocks) other writers while it runs."""
        path = str(self._conn.path)
        before = _size(path)
        self._conn.db.execute(Q["vacuum"])
        self._conn.db.execute(Q["wal_checkpoint"])
        return before, _size(path)


def _size(path: str) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.path.getsize(path + suffix)
    return total
