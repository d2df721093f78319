"""What users read from the store: counts, failures with their evidence, attempts,
results, events, counters, listings.

Composed into :class:`~oomguard.store.sqlite.SqliteStore` as ``store.queries``, kept apart
from the scheduler's hot path.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from oomguard.errors import BlobMissingError, JobNotFoundError
from oomguard.jobs.model import FINISHED_STATES, OPEN_STATES
from oomguard.store.sql_text import ALL_STATES_SQL, OPEN_SQL
from oomguard.units import key_order

if TYPE_CHECKING:
    from oomguard.store.blobs import BlobFiles
    from oomguard.store.connection import Connection

#: a scheduler whose heartbeat is older than this is not running (the default lease_ttl)
LIVE_SCHEDULER_S = 30.0
#: tasks deleted per transaction by forget_job, so a live scheduler is never blocked long
FORGET_CHUNK = 20_000


class Queries:
    """What users read from the store: counts, failures with their evidence, attempts,
    results, events, listings and the counts ``/metrics`` reports."""

    def __init__(self, conn: Connection, blobs: BlobFiles) -> None:
        self._conn = conn
        self._blobs = blobs

    @property
    def db(self) -> sqlite3.Connection:
        return self._conn.db

    # -- queries for users ------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, Any]:
        row = self.db.execute(
            "SELECT id, name, namespace, fn, agg, spec, state, created_at, total_groups "
            "FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            raise JobNotFoundError(
                f"no job {job_id!r} in store {str(self._conn.path)!r}", job_id=job_id
            )
        keys = ("id", "name", "namespace", "fn", "agg", "spec", "state", "created_at", "groups")
        job = dict(zip(keys, row, strict=False))
        job["spec"] = json.loads(job["spec"])
        return job

    def jobs(self) -> list[dict[str, Any]]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM jobs ORDER BY created_at")]
        return [self.job(i) for i in ids]

    def stop_cause(self, job_id: str) -> str | None:
        """Why the job was stopped (``Admin.stop_job``), or None if it was not."""
        row = self.db.execute(
            "SELECT j.state, (SELECT data FROM events WHERE job_id = j.id AND kind = 'job_stopped' "
            "ORDER BY id DESC LIMIT 1) FROM jobs j WHERE j.id = ?",
            (job_id,),
        ).fetchone()
        if row is None or row[0] != "stopped" or row[1] is None:
            return None
        cause = json.loads(row[1]).get("cause")
        return str(cause) if cause is not None else None

    def counts(self, job_id: str) -> dict[str, int]:
        counts = {
            "pending": 0,
            "ready": 0,
            "queued": 0,
            "running": 0,
            "succeeded": 0,
            "failed": 0,
            "cancelled": 0,
        }
        for state, n in self.db.execute(
            f"SELECT state, COUNT(*) FROM tasks WHERE state IN {ALL_STATES_SQL} AND job_id = ? "
            "GROUP BY state",
            (job_id,),
        ):
            counts[state] = int(n)
        return counts

    def recent_jobs(
        self, limit: int, namespaces: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` jobs (of ``namespaces``; None: of all): id, name,
        namespace, fn, state, created_at."""
        keys = ("job_id", "name", "namespace", "fn", "state", "created_at")
        args: list[Any]
        where, args = "", [limit]
        if namespaces is not None:
            chosen = sorted(namespaces)
            if not chosen:
                return []
            where = f"WHERE namespace IN ({','.join('?' * len(chosen))}) "
            args = [*chosen, limit]
        return [
            dict(zip(keys, row, strict=True))
            for row in self.db.execute(
                "SELECT id, name, namespace, fn, state, created_at FROM jobs "
                f"{where}ORDER BY created_at DESC LIMIT ?",
                args,
            )
        ]

    def task_list(
        self,
        job_id: str,
        *,
        state: str | None = None,
        failure_class: str | None = None,
        limit: int = 100,
        after: int | None = None,
        params: bool = False,
    ) -> list[dict[str, Any]]:
        """The job's tasks in id order after task ``after``, filtered by state and failure
        class. With ``params``, each row's ``params`` is its JSON text where the row holds
        it; ``params_in_blob`` says they are in a blob file, which is never read here (rows
        of a batch share one blob: a listing would read and parse it once per row)."""
        sql = (
            "SELECT id, grp, kind, replicate, fn, state, attempts, failure_class, error, "
            + ("params, params_ref IS NOT NULL" if params else "NULL, 0")
            + " FROM tasks WHERE job_id = ?"
        )
        args: list[Any] = [job_id]
        if after is not None:
            sql += " AND id > ?"
            args.append(after)
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        if failure_class is not None:
            sql += " AND failure_class = ?"
            args.append(failure_class)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        keys = (
            "task_id",
            "group",
            "kind",
            "replicate",
            "fn",
            "state",
            "attempts",
            "failure_class",
            "error",
            "params",
            "params_in_blob",
        )
        return [
            dict(zip(keys, (*row[:-1], bool(row[-1])), strict=True))
            for row in self.db.execute(sql, args).fetchall()
        ]

    # -- counts over the whole store (metrics) -------------------------------------------

    def open_tasks_by_job(self) -> dict[str, int]:
        """Unfinished tasks by job (the index ``tasks_state``: only open tasks are read)."""
        return {
            str(job_id): int(n)
            for job_id, n in self.db.execute(
                f"SELECT job_id, COUNT(*) FROM tasks WHERE state IN {OPEN_SQL} GROUP BY job_id"
            )
        }

    def job_namespace(self, job_id: str) -> str | None:
        row = self.db.execute("SELECT namespace FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def task_states(self, namespaces: Collection[str] | None = None) -> dict[str, int]:
        """Tasks of every job (or of the jobs of ``namespaces``) by state."""
        if namespaces is None:
            rows = self.db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state")
        else:
            chosen = sorted(namespaces)
            marks = ",".join("?" * len(chosen))
            rows = self.db.execute(
                "SELECT state, COUNT(*) FROM tasks WHERE job_id IN "
                f"(SELECT id FROM jobs WHERE namespace IN ({marks})) GROUP BY state",
                chosen,
            )
        return {str(s): int(n) for s, n in rows}

    def failed_tasks_by_class(self) -> dict[tuple[str, str], int]:
        """Tasks failed for good, by (final class, function)."""
        return {
            (str(c), str(f)): int(n)
            for c, f, n in self.db.execute(
                "SELECT COALESCE(failure_class, 'unknown'), fn, COUNT(*) FROM tasks "
                "WHERE state = 'failed' GROUP BY 1, 2"
            )
        }

    def ended_attempts_upper(self) -> int:
        """Attempts are ended in id order up to the oldest running one: every attempt with
        an id up to the returned one has ended."""
        row = self.db.execute(
            "SELECT (SELECT MIN(id) FROM attempts WHERE state = 'running'), "
            "(SELECT MAX(id) FROM attempts)"
        ).fetchone()
        return int(row[0] - 1) if row[0] is not None else int(row[1] or 0)

    def attempt_failures_between(self, low: int, high: int) -> dict[tuple[str, str], int]:
        """Failed attempts with ``low < id <= high`` by (class, function)."""
        return {
            (str(cls), str(fn)): int(n)
            for cls, fn, n in self.db.execute(
                "SELECT a.failure_class, t.fn, COUNT(*) FROM attempts a JOIN tasks t "
                "ON t.id = a.task_id WHERE a.id > ? AND a.id <= ? AND "
                "a.failure_class IS NOT NULL GROUP BY a.failure_class, t.fn",
                (low, high),
            )
        }

    def job_status(self, job_id: str) -> dict[str, Any]:
        """A job's state, counts by state, failures by class and where its results go."""
        job = self.job(job_id)
        counts = self.counts(job_id)
        total = sum(counts.values())
        finished = sum(counts[s] for s in FINISHED_STATES)
        return {
            "job_id": job_id,
            "name": job["name"],
            "namespace": job["namespace"],
            "fn": job["fn"],
            "aggregate": job["agg"],
            "state": self._interrupted(job_id, _job_state(job["state"], counts, total)),
            "groups": job["groups"],
            "tasks": total,
            "finished": finished,
            "counts": counts,
            "failures_by_class": self.failures_by_class(job_id),
            # Why the job was stopped (its first attempts all failed loading its task).
            "stopped": self.stop_cause(job_id) if job["state"] == "stopped" else None,
            "out": job["spec"].get("out"),
            # As the last scheduler on this store saw them.
            "memory_budget_bytes": int(budget) if (budget := self.meta("memory_budget")) else None,
            "isolation": self.meta("isolation"),
        }

    def _interrupted(self, job_id: str, state: str) -> str:
        """``interrupted`` for a job with work left that was stopped (Ctrl-C, SIGTERM,
        ``kill -9``) while no scheduler runs on the store: nothing moves it until the same
        command is run again; else ``state`` as it is."""
        if state not in ("running", "waiting"):
            return state
        live = self.db.execute(
            "SELECT 1 FROM schedulers WHERE stopped_at IS NULL AND heartbeat > ? LIMIT 1",
            (time.time() - LIVE_SCHEDULER_S,),
        ).fetchone()
        if live is not None:
            return state
        stopped = self.db.execute(
            "SELECT 1 FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.job_id = ? "
            "AND a.state IN ('interrupted', 'running') LIMIT 1",
            (job_id,),
        ).fetchone()
        return "interrupted" if stopped is not None else state

    def failures_by_class(self, job_id: str) -> dict[str, int]:
        """Failed attempts of the job by failure class (every attempt, retried or not)."""
        return {
            str(c): int(n)
            for c, n in self.db.execute(
                "SELECT a.failure_class, COUNT(*) FROM attempts a JOIN tasks t ON t.id = a.task_id "
                "WHERE t.job_id = ? AND a.failure_class IS NOT NULL GROUP BY a.failure_class",
                (job_id,),
            )
        }

    def failed_tasks(self, job_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Tasks that failed for good, each with its attempts and their evidence."""
        sql = (
            "SELECT id, grp, kind, replicate, fn, params, params_ref, failure_class, error, "
            "attempts, memory_key FROM tasks WHERE job_id = ? AND state = 'failed' ORDER BY id"
        )
        args: tuple[Any, ...] = (job_id,)
        if limit is not None:
            sql += " LIMIT ?"
            args += (limit,)
        out = []
        for (
            tid,
            grp,
            kind,
            rep,
            fn,
            params,
            params_ref,
            fc,
            error,
            attempts,
            key,
        ) in self.db.execute(sql, args).fetchall():
            params = _or_missing(self._blobs.params_of, params, params_ref)
            if isinstance(params, BlobMissingError):
                params = json.dumps({"params_missing": str(params)})
            out.append(
                {
                    "task_id": tid,
                    "group": grp,
                    "kind": kind,
                    "replicate": rep,
                    "fn": fn,
                    "params": json.loads(params) if params else None,
                    "failure_class": fc,
                    "error": error,
                    "attempts": self.attempts(tid),
                    "attempt_count": attempts,
                    # what its memory estimate is learned under (fn|NAME=VALUE)
                    "memory_key": key,
                }
            )
        return out

    def job_times(self, job_id: str) -> dict[str, Any]:
        """When the job's first attempt started, its last one ended, and how many run."""
        first, last, running = self.db.execute(
            "SELECT MIN(a.started_at), MAX(a.ended_at), SUM(a.state = 'running') "
            "FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.job_id = ?",
            (job_id,),
        ).fetchone()
        return {"started_at": first, "ended_at": last, "running_attempts": int(running or 0)}

    def job_estimates(self, job_id: str) -> list[dict[str, Any]]:
        """The learned estimate of each memory key the job's tasks use."""
        keys = (
            "memory_key",
            "bytes",
            "peak_bytes",
            "samples",
            "updated_at",
            "killed_at",
            "unfit_cap",
        )
        rows = [
            dict(zip(keys, row, strict=True))
            for row in self.db.execute(
                "SELECT memory_key, bytes, peak_bytes, samples, updated_at, killed_at, unfit_cap "
                "FROM estimates WHERE memory_key IN (SELECT DISTINCT COALESCE(memory_key, fn) "
                "FROM tasks WHERE job_id = ?)",
                (job_id,),
            )
        ]
        # In the order of the key's value (50 before 100), not as strings.
        return sorted(rows, key=lambda r: key_order(str(r["memory_key"])))

    def task(self, task_id: int) -> dict[str, Any] | None:
        """One task: its job, function, state, final class and error (params as JSON text,
        or ``params_in_blob``); None when there is no such task."""
        keys = (
            "task_id",
            "job_id",
            "group",
            "kind",
            "replicate",
            "fn",
            "state",
            "attempt_count",
            "failure_class",
            "error",
            "memory_key",
            "memory",
            "params",
            "params_in_blob",
        )
        row = self.db.execute(
            "SELECT id, job_id, grp, kind, replicate, fn, state, attempts, failure_class, "
            "error, memory_key, memory, params, params_ref IS NOT NULL FROM tasks WHERE id = ?",
            (task_id,),
        ).fetchone()
        return None if row is None else dict(zip(keys, row, strict=True))

    def attempts(self, task_id: int) -> list[dict[str, Any]]:
        keys = (
            "attempt_id",
            "n",
            "worker",
            "pid",
            "state",
            "started_at",
            "ended_at",
            "failure_class",
            "admitted_bytes",
            "limit_bytes",
            "peak_bytes",
            "evidence",
        )
        rows = self.db.execute(
            f"SELECT id, {', '.join(keys[1:])} FROM attempts WHERE task_id = ? ORDER BY id",
            (task_id,),
        ).fetchall()
        out = []
        for row in rows:
            item = dict(zip(keys, row, strict=False))
            item["evidence"] = json.loads(item["evidence"]) if item["evidence"] else None
            out.append(item)
        return out

    def all_attempts(self, job_id: str) -> Iterator[dict[str, Any]]:
        keys = (
            "attempt_id",
            "task_id",
            "started_at",
            "ended_at",
            "admitted_bytes",
            "limit_bytes",
            "peak_bytes",
            "failure_class",
            "state",
            "memory_key",
        )
        for row in self.db.execute(
            "SELECT a.id, a.task_id, a.started_at, a.ended_at, a.admitted_bytes, a.limit_bytes, "
            "a.peak_bytes, a.failure_class, a.state, t.memory_key FROM attempts a "
            "JOIN tasks t ON t.id = a.task_id WHERE t.job_id = ? ORDER BY a.id",
            (job_id,),
        ):
            yield dict(zip(keys, row, strict=False))

    def group_results(
        self, job_id: str, grp: int
    ) -> list[tuple[int | None, bytes | None, str | None]]:
        """The stored results of a group's replicates, by replicate, unread: ``(attempt
        id, value, value_ref)``, the attempt whose result was stored (the Dask executor
        sends the results it holds by attempt: docs/ARCHITECTURE.md, "Dask")."""
        sql = (
            "SELECT r.attempt_id, r.value, r.value_ref FROM results r "
            "JOIN tasks t ON t.id = r.task_id "
            "WHERE t.job_id = ? AND t.grp = ? AND t.kind = 'task' ORDER BY t.replicate"
        )
        return [(a, value, ref) for a, value, ref in self.db.execute(sql, (job_id, grp))]

    def result_rows(
        self, job_id: str, kind: str = "task", part: int | None = None
    ) -> Iterator[
        tuple[int, int, int | None, str | BlobMissingError | None, int, bytes | BlobMissingError]
    ]:
        """``(task_id, grp, replicate, params, attempts, pickled value)`` of stored results.

        ``params`` or ``value`` is the :class:`BlobMissingError` when its blob file is gone.
        """
        sql = (
            "SELECT t.id, t.grp, t.replicate, t.params, t.params_ref, t.attempts, r.value, "
            "r.value_ref "
            "FROM results r JOIN tasks t ON t.id = r.task_id "
            "WHERE r.job_id = ? AND r.kind = ?"
        )
        args: list[Any] = [job_id, kind]
        if part is not None:
            sql += " AND r.part = ?"
            args.append(part)
        sql += " ORDER BY t.id"
        for tid, grp, rep, params, pref, attempts, value, ref in self.db.execute(sql, args):
            # A blob deleted by hand costs its row its params or value, said in the row;
            # it never stops the Parquet writer (and with it the scheduler).
            yield (
                tid,
                grp,
                rep,
                _or_missing(self._blobs.params_of, params, pref),
                attempts,
                _or_missing(self._blobs.get, ref) if ref else value,
            )

    def events(self, job_id: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, ts, task_id, kind, data FROM events WHERE job_id = ? "
            "ORDER BY id DESC LIMIT ?",
            (job_id, limit),
        ).fetchall()
        return [
            {"id": i, "ts": ts, "task_id": t, "kind": k, "data": json.loads(d) if d else None}
            for i, ts, t, k, d in reversed(rows)
        ]

    def unwritten_parts(self, job_id: str) -> int:
        """Stored results of the job not yet in a Parquet part, plus parts not yet renamed.

        Zero for a job without Parquet output.
        """
        if not self.job(job_id)["spec"].get("out"):
            return 0
        row = self.db.execute(
            "SELECT (SELECT COUNT(*) FROM results WHERE job_id = ? AND part IS NULL) + "
            "(SELECT COUNT(*) FROM parts WHERE job_id = ? AND written = 0)",
            (job_id, job_id),
        ).fetchone()
        return int(row[0])

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def counter(self, name: str) -> int:
        row = self.db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0


T = TypeVar("T")


def _or_missing(read: Callable[..., T], *args: object) -> T | BlobMissingError:
    """What ``read(*args)`` returns, or the :class:`BlobMissingError` it raised."""
    try:
        return read(*args)
    except BlobMissingError as err:
        return err


def _job_state(stored: str, counts: dict[str, int], total: int) -> str:
    if stored == "cancelled":
        return "cancelled"
    if stored == "stopped":  # its first attempts all failed loading its task
        return "failed"
    open_ = sum(counts[s] for s in OPEN_STATES)
    if stored == "open" or open_:
        return (
            "running" if counts["running"] or counts["succeeded"] or counts["failed"] else "waiting"
        )
    return "failed" if counts["failed"] else "succeeded"
