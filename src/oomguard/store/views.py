"""What users read from the store: counts, failures with their evidence, attempts,
results, events, counters, listings.

Composed into :class:`~oomguard.store.sqlite.SqliteStore` as ``store.queries``, kept apart
from the scheduler's hot path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, TypeVar

from oomguard.errors import BlobMissingError, JobNotFoundError
from oomguard.jobs.jsonvalue import JSON
from oomguard.jobs.model import FINISHED_STATES, OPEN_STATES
from oomguard.store.db import Db
from oomguard.store.failures import translated
from oomguard.store.queries import Q
from oomguard.store.records import (
    AttemptRecord,
    AttemptSpan,
    EventRecord,
    FailedTask,
    JobListing,
    JobProgress,
    JobRecord,
    JobTimes,
    KeyEstimate,
    StoredSpec,
    TaskDetail,
    TaskListing,
)
from oomguard.units import key_order

if TYPE_CHECKING:
    from oomguard.store.blobs import BlobReader
    from oomguard.store.connection import Connection

#: a scheduler whose heartbeat is older than this is not running (the default lease_ttl)
LIVE_SCHEDULER_S = 30.0
#: tasks deleted per transaction by forget_job, so a live scheduler is never blocked long
FORGET_CHUNK = 20_000


@translated
class Queries:
    """What users read from the store: counts, failures with their evidence, attempts,
    results, events, listings and the counts ``/metrics`` reports."""

    def __init__(self, conn: Connection, blobs: BlobReader) -> None:
        self._conn = conn
        self._blobs = blobs

    @property
    def db(self) -> Db:
        return self._conn.db

    # -- queries for users ------------------------------------------------------------

    def job(self, job_id: str) -> JobRecord:
        row = self.db.execute(
            Q["job"],
            (job_id,),
        ).fetchone()
        if row is None:
            raise JobNotFoundError(
                f"no job {job_id!r} in store {str(self._conn.path)!r}", job_id=job_id
            )
        job_id, name, namespace, fn, agg, spec, state, created_at, groups = row
        return JobRecord(
            id=str(job_id),
            name=str(name),
            namespace=str(namespace),
            fn=str(fn),
            agg=agg,
            spec=StoredSpec.from_json(spec),
            state=str(state),
            created_at=float(created_at),
            groups=int(groups or 0),
        )

    def jobs(self) -> list[JobRecord]:
        ids = [r[0] for r in self.db.execute(Q["job_ids"])]
        return [self.job(i) for i in ids]

    def stop_cause(self, job_id: str) -> str | None:
        """Why the job was stopped (``Admin.stop_job``), or None if it was not."""
        row = self.db.execute(
            Q["stop_cause"],
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
            Q["task_counts"],
            (job_id,),
        ):
            counts[state] = int(n)
        return counts

    def recent_jobs(
        self, limit: int, namespaces: Collection[str] | None = None
    ) -> list[JobListing]:
        """The newest ``limit`` jobs (of ``namespaces``; None: of all)."""
        if namespaces is None:
            rows = self.db.execute(
                Q["recent_jobs"],
                (limit,),
            )
        else:
            if not namespaces:
                return []
            rows = self.db.execute(
                Q["recent_jobs_in_namespaces"],
                (json.dumps(sorted(namespaces)), limit),
            )
        return [
            JobListing(
                job_id=str(job_id),
                name=str(name),
                namespace=str(namespace),
                fn=str(fn),
                state=str(state),
                created_at=float(created_at),
            )
            for job_id, name, namespace, fn, state, created_at in rows
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
    ) -> list[TaskListing]:
        """The job's tasks in id order after task ``after``, filtered by state and failure
        class. With ``params``, each row's ``params`` is its JSON text where the row holds
        it; ``params_in_blob`` says they are in a blob file, which is never read here (rows
        of a batch share one blob: a listing would read and parse it once per row)."""
        args = {
            "job_id": job_id,
            "params": params,
            "after": after,
            "state": state,
            "failure_class": failure_class,
            "limit": limit,
        }
        sql = Q["task_list"] if state is None else Q["task_list_in_state"]
        return [
            TaskListing(
                task_id=tid,
                group=grp,
                kind=kind,
                replicate=rep,
                fn=fn,
                state=st,
                attempts=attempts,
                failure_class=fc,
                error=error,
                params=text,
                params_in_blob=bool(in_blob),
            )
            for tid, grp, kind, rep, fn, st, attempts, fc, error, text, in_blob in self.db.execute(
                sql, args
            ).fetchall()
        ]

    # -- counts over the whole store (metrics) -------------------------------------------

    def open_tasks_by_job(self) -> dict[str, int]:
        """Unfinished tasks by job (the index ``tasks_state``: only open tasks are read)."""
        return {str(job_id): int(n) for job_id, n in self.db.execute(Q["open_tasks_by_job"])}

    def job_namespace(self, job_id: str) -> str | None:
        row = self.db.execute(Q["job_namespace"], (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def task_states(self, namespaces: Collection[str] | None = None) -> dict[str, int]:
        """Tasks of every job (or of the jobs of ``namespaces``) by state."""
        if namespaces is None:
            rows = self.db.execute(Q["task_states"])
        else:
            rows = self.db.execute(
                Q["task_states_in_namespaces"],
                (json.dumps(sorted(namespaces)),),
            )
        return {str(s): int(n) for s, n in rows}

    def failed_tasks_by_class(self) -> dict[tuple[str, str], int]:
        """Tasks failed for good, by (final class, function)."""
        return {(str(c), str(f)): int(n) for c, f, n in self.db.execute(Q["failed_tasks_by_class"])}

    def ended_attempts_upper(self) -> int:
        """Attempts are ended in id order up to the oldest running one: every attempt with
        an id up to the returned one has ended."""
        row = self.db.execute(Q["ended_attempts_upper"]).fetchone()
        return int(row[0] - 1) if row[0] is not None else int(row[1] or 0)

    def attempt_failures_between(self, low: int, high: int) -> dict[tuple[str, str], int]:
        """Failed attempts with ``low < id <= high`` by (class, function)."""
        return {
            (str(cls), str(fn)): int(n)
            for cls, fn, n in self.db.execute(
                Q["attempt_failures_between"],
                (low, high),
            )
        }

    def job_status(self, job_id: str) -> JobProgress:
        """A job's state, counts by state, failures by class and where its results go."""
        job = self.job(job_id)
        counts = self.counts(job_id)
        total = sum(counts.values())
        finished = sum(counts[s] for s in FINISHED_STATES)
        return JobProgress(
            job_id=job_id,
            name=job.name,
            namespace=job.namespace,
            fn=job.fn,
            aggregate=job.agg,
            state=self._interrupted(job_id, _job_state(job.state, counts, total)),
            groups=job.groups,
            tasks=total,
            finished=finished,
            counts=counts,
            failures_by_class=self.failures_by_class(job_id),
            # Why the job was stopped (its first attempts all failed loading its task).
            stopped=self.stop_cause(job_id) if job.state == "stopped" else None,
            out=job.spec.out,
            # As the last scheduler on this store saw them.
            memory_budget_bytes=int(budget) if (budget := self.meta("memory_budget")) else None,
            isolation=self.meta("isolation"),
        )

    def _interrupted(self, job_id: str, state: str) -> str:
        """``interrupted`` for a job with work left that was stopped (Ctrl-C, SIGTERM,
        ``kill -9``) while no scheduler runs on the store: nothing moves it until the same
        command is run again; else ``state`` as it is."""
        if state not in ("running", "waiting"):
            return state
        live = self.db.execute(
            Q["live_scheduler"],
            (time.time() - LIVE_SCHEDULER_S,),
        ).fetchone()
        if live is not None:
            return state
        stopped = self.db.execute(
            Q["job_has_unended_attempts"],
            (job_id,),
        ).fetchone()
        return "interrupted" if stopped is not None else state

    def failures_by_class(self, job_id: str) -> dict[str, int]:
        """Failed attempts of the job by failure class (every attempt, retried or not)."""
        return {
            str(c): int(n)
            for c, n in self.db.execute(
                Q["failures_by_class"],
                (job_id,),
            )
        }

    def failed_tasks(self, job_id: str, limit: int | None = None) -> list[FailedTask]:
        """Tasks that failed for good, each with its attempts and their evidence."""
        # A negative LIMIT is no limit.
        sql, args = Q["failed_tasks"], (job_id, -1 if limit is None else limit)
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
                FailedTask(
                    task_id=tid,
                    group=grp,
                    kind=kind,
                    replicate=rep,
                    fn=fn,
                    params=_json(params),
                    failure_class=fc,
                    error=error,
                    attempts=tuple(self.attempts(tid)),
                    attempt_count=attempts,
                    memory_key=key,
                )
            )
        return out

    def job_times(self, job_id: str) -> JobTimes:
        """When the job's first attempt started, its last one ended, and how many run."""
        first, last, running = self.db.execute(
            Q["job_times"],
            (job_id,),
        ).fetchone()
        return JobTimes(
            started_at=None if first is None else float(first),
            ended_at=None if last is None else float(last),
            running_attempts=int(running or 0),
        )

    def job_estimates(self, job_id: str) -> list[KeyEstimate]:
        """The learned estimate of each memory key the job's tasks use (without the
        spread of its peaks or the proof of an unfit key: ``estimate_rows`` has them)."""
        rows = [
            KeyEstimate(
                memory_key=str(key),
                bytes=int(b),
                peak_bytes=int(peak),
                samples=int(n),
                updated_at=None if updated is None else float(updated),
                killed_at=int(killed or 0),
                unfit_cap=int(unfit or 0),
            )
            for key, b, peak, n, updated, killed, unfit in self.db.execute(
                Q["job_estimates"],
                (job_id,),
            )
        ]
        # In the order of the key's value (50 before 100), not as strings.
        return sorted(rows, key=lambda r: key_order(r.memory_key))

    def task(self, task_id: int) -> TaskDetail | None:
        """One task: its job, function, state, final class and error (params as JSON text,
        or ``params_in_blob``); None when there is no such task."""
        row = self.db.execute(
            Q["task"],
            (task_id,),
        ).fetchone()
        if row is None:
            return None
        (tid, job_id, grp, kind, rep, fn, state, attempts, fc, error, key, memory, text, blob) = row
        return TaskDetail(
            task_id=tid,
            job_id=job_id,
            group=grp,
            kind=kind,
            replicate=rep,
            fn=fn,
            state=state,
            attempt_count=attempts,
            failure_class=fc,
            error=error,
            memory_key=key,
            memory=memory,
            params=text,
            params_in_blob=bool(blob),
        )

    def attempts(self, task_id: int) -> list[AttemptRecord]:
        """A task's attempts in order, with their evidence."""
        return [
            AttemptRecord(
                attempt_id=aid,
                n=n,
                worker=worker,
                pid=pid,
                state=state,
                started_at=started,
                ended_at=ended,
                failure_class=fc,
                admitted_bytes=admitted,
                limit_bytes=limit,
                peak_bytes=peak,
                evidence=_json(evidence),
            )
            for (
                aid,
                n,
                worker,
                pid,
                state,
                started,
                ended,
                fc,
                admitted,
                limit,
                peak,
                evidence,
            ) in self.db.execute(
                Q["task_attempts"],
                (task_id,),
            ).fetchall()
        ]

    def all_attempts(self, job_id: str) -> Iterator[AttemptSpan]:
        """Every attempt of the job in order, with its task's memory key."""
        for aid, tid, started, ended, admitted, limit, peak, fc, state, key in self.db.execute(
            Q["all_attempts"],
            (job_id,),
        ):
            yield AttemptSpan(
                attempt_id=aid,
                task_id=tid,
                started_at=started,
                ended_at=ended,
                admitted_bytes=admitted,
                limit_bytes=limit,
                peak_bytes=peak,
                failure_class=fc,
                state=state,
                memory_key=key,
            )

    def group_results(
        self, job_id: str, grp: int
    ) -> list[tuple[int | None, bytes | None, str | None]]:
        """The stored results of a group's replicates, by replicate, unread: ``(attempt
        id, value, value_ref)``, the attempt whose result was stored (the Dask executor
        sends the results it holds by attempt: docs/ARCHITECTURE.md, "Dask")."""
        sql = Q["group_results"]
        return [(a, value, ref) for a, value, ref in self.db.execute(sql, (job_id, grp))]

    def result_rows(
        self, job_id: str, kind: str = "task", part: int | None = None
    ) -> Iterator[
        tuple[int, int, int | None, str | BlobMissingError | None, int, bytes | BlobMissingError]
    ]:
        """``(task_id, grp, replicate, params, attempts, pickled value)`` of stored results.

        ``params`` or ``value`` is the :class:`BlobMissingError` when its blob file is gone.
        """
        args: tuple[str | int, ...]
        if part is None:
            sql, args = Q["result_rows"], (job_id, kind)
        else:
            sql, args = Q["result_rows_of_part"], (job_id, kind, part)
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

    def events(self, job_id: str, limit: int = 100) -> list[EventRecord]:
        """The job's newest ``limit`` events, oldest first."""
        rows = self.db.execute(
            Q["events"],
            (job_id, limit),
        ).fetchall()
        return [
            EventRecord(id=i, ts=ts, task_id=t, kind=k, data=_json(d))
            for i, ts, t, k, d in reversed(rows)
        ]

    def unwritten_parts(self, job_id: str) -> int:
        """Stored results of the job not yet in a Parquet part, plus parts not yet renamed.

        Zero for a job without Parquet output.
        """
        if not self.job(job_id).spec.out:
            return 0
        row = self.db.execute(
            Q["unwritten_parts"],
            (job_id, job_id),
        ).fetchone()
        return int(row[0])

    def meta(self, key: str) -> str | None:
        row = self.db.execute(Q["meta"], (key,)).fetchone()
        return None if row is None else str(row[0])

    def counter(self, name: str) -> int:
        row = self.db.execute(Q["counter"], (name,)).fetchone()
        return int(row[0]) if row else 0


T = TypeVar("T")


def _or_missing(read: Callable[..., T], *args: object) -> T | BlobMissingError:
    """What ``read(*args)`` returns, or the :class:`BlobMissingError` it raised."""
    try:
        return read(*args)
    except BlobMissingError as err:
        return err


def _json(text: str | None) -> JSON:
    """JSON text as stored (None or empty: None)."""
    value: JSON = json.loads(text) if text else None
    return value


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
