"""What the dashboard's own pages read: a task's retry lineage (each attempt's limit and
peak), the learned estimate of its memory key, the failures list searched, and the work
still to run with the memory admitted to it against the budget.

Composed into :class:`~oomguard.store.sqlite.SqliteStore` as ``store.dashboard``; its
statements are in ``sql/dashboard.sql``. Every answer is a frozen record; nothing here
writes. See docs/ARCHITECTURE.md ("The dashboard").
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomguard.store.db import Db
from oomguard.store.failures import translated
from oomguard.store.queries import Q

if TYPE_CHECKING:
    from oomguard.store.connection import Connection


@dataclass(frozen=True)
class LineageAttempt:
    """One attempt of a task: what it was given, what it used, how it ended."""

    attempt_id: int
    #: 1-based attempt number of the task
    n: int
    worker: str | None
    pid: int | None
    state: str
    started_at: float
    ended_at: float | None
    failure_class: str | None
    #: the memory estimate admitted for this attempt
    admitted_bytes: int | None
    #: the kernel's (or the watchdog's) limit it ran under
    limit_bytes: int | None
    peak_bytes: int | None

    @property
    def duration(self) -> float | None:
        """Seconds it ran (None: still running)."""
        return None if self.ended_at is None else max(0.0, self.ended_at - self.started_at)


@dataclass(frozen=True)
class LearnedEstimate:
    """What a memory key is known to need, learned from its tasks' peaks."""

    key: str
    #: the estimate admitted to the key's next attempt (largest peak with a margin)
    bytes: int
    peak_bytes: int
    samples: int
    updated_at: float
    #: the largest limit an attempt of the key was killed for memory at (None: never)
    killed_at: int | None
    #: the cap the key was killed at: it needs more than oomguard can give (None: not so)
    unfit_cap: int | None


@dataclass(frozen=True)
class FailureQuery:
    """What the failures list is filtered by (each None: any) and where its page starts."""

    #: a part of the task's function (any case)
    task: str | None = None
    failure_class: str | None = None
    namespace: str | None = None
    #: a part of the error text (any case)
    error: str | None = None
    #: ended at or after (epoch seconds)
    since: float | None = None
    #: ended before (epoch seconds)
    until: float | None = None
    #: the previous page's last row, ``(ended_at, task_id)``: this page starts after it
    before: tuple[float, int] | None = None


@dataclass(frozen=True)
class FailureRow:
    """A task that failed for good, as the failures list shows it."""

    task_id: int
    job_id: str
    namespace: str
    fn: str
    failure_class: str | None
    error: str | None
    attempts: int
    #: when it failed for good (the task's last update)
    ended_at: float


@dataclass(frozen=True)
class JobQuery:
    """What the jobs list is filtered by (each None: any) and where its page starts."""

    #: a part of the job's function or name (any case)
    task: str | None = None
    #: as users see it: running, waiting, succeeded, failed, cancelled
    state: str | None = None
    #: of one of its failed tasks
    failure_class: str | None = None
    namespace: str | None = None
    #: a part of the error of one of its failed tasks (any case)
    error: str | None = None
    #: created at or after (epoch seconds)
    since: float | None = None
    #: created before (epoch seconds)
    until: float | None = None
    #: the previous page's last row, ``(created_at, job_id)``: this page starts after it
    before: tuple[float, str] | None = None


@dataclass(frozen=True)
class JobRow:
    """A job as the searched jobs list shows it."""

    job_id: str
    name: str
    namespace: str
    fn: str
    created_at: float
    #: as users see it: running, waiting, succeeded, failed, cancelled
    state: str


@dataclass(frozen=True)
class OpenJob:
    """A job with tasks that may still run: how many run, how many wait."""

    job_id: str
    name: str
    namespace: str
    running: int
    #: pending, ready or queued
    waiting: int
    #: the memory admitted to its attempts at the latest sample (None: none taken)
    admitted_bytes: int | None = None
    #: when that sample was taken
    sampled_at: float | None = None


@dataclass(frozen=True)
class OpenTotals:
    """The work still to run, overall."""

    running: int
    #: pending, ready or queued
    waiting: int
    #: jobs with any
    jobs: int


@dataclass(frozen=True)
class MemoryNow:
    """The scheduler's latest sample of the memory it hands out."""

    ts: float
    budget_bytes: int
    #: admitted to every attempt in flight, of every job
    admitted_bytes: int


def _opt_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _opt_float(value: object) -> float | None:
    return None if value is None else float(str(value))


@translated
class DashboardReads:
    """The dashboard's reads (``store.dashboard``)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def db(self) -> Db:
        return self._conn.db

    def lineage(self, task_id: int) -> list[LineageAttempt]:
        """The task's attempts in order (empty: no such task, or none started)."""
        return [
            LineageAttempt(
                attempt_id=int(row[0]),
                n=int(row[1]),
                worker=None if row[2] is None else str(row[2]),
                pid=_opt_int(row[3]),
                state=str(row[4]),
                started_at=float(row[5]),
                ended_at=_opt_float(row[6]),
                failure_class=None if row[7] is None else str(row[7]),
                admitted_bytes=_opt_int(row[8]),
                limit_bytes=_opt_int(row[9]),
                peak_bytes=_opt_int(row[10]),
            )
            for row in self.db.execute(Q["dashboard_lineage"], (task_id,))
        ]

    def key_estimate(self, key: str) -> LearnedEstimate | None:
        """The learned estimate of memory key ``key`` (None: nothing learned yet)."""
        row = self.db.execute(Q["dashboard_key_estimate"], (key,)).fetchone()
        if row is None:
            return None
        return LearnedEstimate(
            key=key,
            bytes=int(row[0]),
            peak_bytes=int(row[1]),
            samples=int(row[2]),
            updated_at=float(row[3]),
            # 0 is how the table says never / none
            killed_at=_opt_int(row[4]) or None,
            unfit_cap=_opt_int(row[5]) or None,
        )

    def failures(
        self, query: FailureQuery, namespaces: Collection[str] | None, limit: int
    ) -> list[FailureRow]:
        """A page of at most ``limit`` tasks that failed for good, newest first, of
        ``namespaces`` (None: of all), filtered by ``query``."""
        before_ts, before_id = query.before if query.before is not None else (None, None)
        params = {
            "namespaces": None if namespaces is None else json.dumps(sorted(namespaces)),
            "namespace": query.namespace,
            "task": query.task,
            "failure_class": query.failure_class,
            "error": query.error,
            "since": query.since,
            "until": query.until,
            "before_ts": before_ts,
            "before_id": before_id,
            "limit": limit,
        }
        return [
            FailureRow(
                task_id=int(row[0]),
                job_id=str(row[1]),
                namespace=str(row[2]),
                fn=str(row[3]),
                failure_class=None if row[4] is None else str(row[4]),
                error=None if row[5] is None else str(row[5]),
                attempts=int(row[6]),
                ended_at=float(row[7]),
            )
            for row in self.db.execute(Q["dashboard_failures"], params)
        ]

    def jobs(self, query: JobQuery, namespaces: Collection[str] | None, limit: int) -> list[JobRow]:
        """A page of at most ``limit`` jobs, newest first, of ``namespaces`` (None: of
        all), filtered by ``query``."""
        before_ts, before_id = query.before if query.before is not None else (None, None)
        params = {
            "namespaces": None if namespaces is None else json.dumps(sorted(namespaces)),
            "namespace": query.namespace,
            "task": query.task,
            "state": query.state,
            "failure_class": query.failure_class,
            "error": query.error,
            "since": query.since,
            "until": query.until,
            "before_ts": before_ts,
            "before_id": before_id,
            "limit": limit,
        }
        return [
            JobRow(
                job_id=str(row[0]),
                name=str(row[1]),
                namespace=str(row[2]),
                fn=str(row[3]),
                created_at=float(row[4]),
                state=str(row[5]),
            )
            for row in self.db.execute(Q["dashboard_jobs"], params)
        ]

    def open_work(self, namespaces: Collection[str] | None, limit: int) -> list[OpenJob]:
        """The first ``limit`` jobs of ``namespaces`` (None: of all) with tasks that may
        still run, most running first, each with the memory its attempts were admitted at
        the latest sample."""
        listed = None if namespaces is None else json.dumps(sorted(namespaces))
        jobs = []
        for job_id, name, namespace, running, waiting in self.db.execute(
            Q["dashboard_open_work"], {"namespaces": listed, "limit": limit}
        ).fetchall():
            sample = self.db.execute(Q["dashboard_job_last_sample"], (job_id,)).fetchone()
            jobs.append(
                OpenJob(
                    job_id=str(job_id),
                    name=str(name),
                    namespace=str(namespace),
                    running=int(running),
                    waiting=int(waiting),
                    admitted_bytes=None if sample is None else int(sample[1]),
                    sampled_at=None if sample is None else float(sample[0]),
                )
            )
        return jobs

    def open_totals(self, namespaces: Collection[str] | None) -> OpenTotals:
        """The tasks of ``namespaces`` (None: of all) running and waiting, overall."""
        listed = None if namespaces is None else json.dumps(sorted(namespaces))
        running, waiting, jobs = self.db.execute(
            Q["dashboard_open_totals"], {"namespaces": listed}
        ).fetchone()
        return OpenTotals(running=int(running), waiting=int(waiting), jobs=int(jobs))

    def memory_now(self) -> MemoryNow | None:
        """The scheduler's latest sample of the budget and what is admitted against it
        (None: no sample taken)."""
        row = self.db.execute(Q["dashboard_last_sample"]).fetchone()
        if row is None:
            return None
        return MemoryNow(ts=float(row[0]), budget_bytes=int(row[1]), admitted_bytes=int(row[2]))


__all__ = [
    "DashboardReads",
    "FailureQuery",
    "FailureRow",
    "JobQuery",
    "JobRow",
    "LearnedEstimate",
    "LineageAttempt",
    "MemoryNow",
    "OpenJob",
    "OpenTotals",
]
