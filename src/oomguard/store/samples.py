"""The dashboard's time series: what the scheduler recorded about each job, second by
second (memory admitted against the budget, attempts in flight, each worker's RSS), and
what the attempts tell over time (tasks ended per interval, the OOM kills).

Composed into :class:`~oomguard.store.sqlite.SqliteStore` as ``store.samples``. The series
is bounded: :meth:`Samples.prune` deletes rows past the retention and thins the older half
of a job with too many rows; :meth:`~oomguard.store.admin.Admin.forget_job` deletes a
job's rows. See docs/ARCHITECTURE.md ("Store", "The dashboard").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from oomguard.jobs.model import FailureClass
from oomguard.store.db import Db
from oomguard.store.failures import translated
from oomguard.store.queries import Q
from oomguard.store.records import KillPoint, ThroughputPoint

if TYPE_CHECKING:
    from oomguard.store.connection import Connection

#: failure classes marked on the time axis: the attempt ran out of memory
MEMORY_CLASSES = tuple(c.value for c in FailureClass if c.is_oom)


@dataclass(frozen=True)
class Sample:
    """What the scheduler saw of one job at one moment."""

    job_id: str
    ts: float
    budget_bytes: int
    #: admitted to every attempt in flight, of every job
    admitted_bytes: int
    #: of which to this job's attempts
    job_admitted_bytes: int
    #: this job's attempts in flight
    running: int
    #: worker name -> resident memory with children (bytes)
    workers: dict[str, int] = field(default_factory=dict)


@translated
class Samples:
    """Record, read and bound the time series (``store.samples``)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._available: bool | None = None

    @property
    def db(self) -> Db:
        return self._conn.db

    def available(self) -> bool:
        """Whether the store has the table: a store of schema version < 4 opened read-only
        (``oomguard ui``) cannot be migrated, and simply has no series."""
        if self._available is None:
            row = self.db.execute(Q["samples_available"]).fetchone()
            self._available = row is not None
        return self._available

    def record(self, samples: Sequence[Sample]) -> None:
        """Insert ``samples`` in one transaction."""
        if not samples:
            return
        with self._conn.transaction() as db:
            db.executemany(
                Q["insert_sample"],
                [
                    (
                        s.job_id,
                        s.ts,
                        s.budget_bytes,
                        s.admitted_bytes,
                        s.job_admitted_bytes,
                        s.running,
                        json.dumps(s.workers, sort_keys=True),
                    )
                    for s in samples
                ],
            )

    def count(self, job_id: str) -> int:
        if not self.available():
            return 0
        row = self.db.execute(Q["sample_count"], (job_id,))
        return int(row.fetchone()[0])

    def series(self, job_id: str, max_points: int = 600) -> list[Sample]:
        """The job's samples in time order, at most about ``max_points`` (evenly thinned)."""
        if not self.available():
            return []
        n = self.count(job_id)
        step = max(1, -(-n // max(1, max_points)))
        rows = self.db.execute(
            Q["sample_series"],
            (job_id, step, n),
        ).fetchall()
        out = []
        for ts, budget, admitted, job_admitted, running, workers in rows:
            try:
                loaded = json.loads(workers)
            except ValueError:
                loaded = {}
            out.append(
                Sample(
                    job_id=job_id,
                    ts=float(ts),
                    budget_bytes=int(budget),
                    admitted_bytes=int(admitted),
                    job_admitted_bytes=int(job_admitted),
                    running=int(running),
                    workers={str(k): int(v) for k, v in loaded.items()}
                    if isinstance(loaded, dict)
                    else {},
                )
            )
        return out

    def prune(self, older_than: float, max_per_job: int, jobs: Iterable[str] = ()) -> int:
        """Delete samples taken before ``older_than``; of each of ``jobs`` (those sampled
        lately: only they can have grown) with more than ``max_per_job`` rows, delete every
        second row of its older half (a long job keeps its whole span at a coarser step).
        Short transactions on indexes: a scheduler writing the store waits little. Returns
        the rows deleted."""
        with self._conn.transaction() as db:
            deleted = int(db.execute(Q["prune_samples"], (older_than,)).rowcount)
        for job_id in jobs:
            with self._conn.transaction() as db:
                n = int(db.execute(Q["sample_count"], (job_id,)).fetchone()[0])
                if n <= max_per_job:
                    continue
                deleted += db.execute(
                    Q["thin_samples"],
                    (job_id, n // 2),
                ).rowcount
        return deleted

    # -- what the attempts tell over time ---------------------------------------------------

    def throughput(self, job_id: str, max_points: int = 300) -> list[ThroughputPoint]:
        """Attempts of the job ended per interval: ``t`` (start of the interval),
        ``step`` (seconds), ``succeeded``, ``failed`` (attempts), and ``done``: tasks
        finished for good by the end of the interval (succeeded, or failed at their last
        attempt)."""
        span = self.db.execute(
            Q["attempts_span"],
            (job_id,),
        ).fetchone()
        if span[0] is None:
            return []
        first, last = float(span[0]), float(span[1])
        step = max(1.0, (last - first) / max(1, max_points))
        rows = self.db.execute(
            Q["throughput"],
            (first, step, job_id),
        ).fetchall()
        out = []
        done = 0
        for bucket, ok, failed, finished in rows:
            done += int(finished or 0)
            out.append(
                ThroughputPoint(
                    t=first + int(bucket) * step,
                    step=step,
                    succeeded=int(ok or 0),
                    failed=int(failed or 0),
                    done=done,
                )
            )
        return out

    def kills(self, job_id: str, limit: int = 500) -> list[KillPoint]:
        """The job's attempts that ran out of memory (OOM kills, ``memory_error``), in time
        order: when, class, memory key, limit, task and attempt."""
        rows = self.db.execute(
            Q["memory_kills"],
            (job_id, json.dumps(list(MEMORY_CLASSES)), limit),
        ).fetchall()
        return [
            KillPoint(
                ts=ts,
                failure_class=fc,
                key=key,
                limit_bytes=limit_bytes,
                peak_bytes=peak,
                task_id=tid,
                attempt_id=aid,
                pid=pid,
            )
            for ts, fc, key, limit_bytes, peak, tid, aid, pid in rows
        ]


__all__ = ["MEMORY_CLASSES", "Sample", "Samples"]
