"""Retention for a long-running server (``serve --retention``, the ``retention`` key).

A thread of the server forgets finished jobs older than the retention, a few at a time
(:data:`STEP_JOBS` per step, each job's rows in chunks: see ``Admin.forget_job``), so the
scheduler's transactions never wait long behind it; it releases the lock rows finished
tasks left, deletes store-wide events older than the retention, and now and then removes
the blob files nothing refers to any more (never younger than :data:`BLOB_MIN_AGE`: a blob
is written before the row that refers to it commits). See docs/ARCHITECTURE.md,
"Retention".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from oomguard.errors import JobActiveError, OomguardError

if TYPE_CHECKING:
    from oomguard.store.protocol import Store

log = logging.getLogger("oomguard.retention")

#: jobs forgotten per step
STEP_JOBS = 20
#: unreferenced blob files younger than this are kept (as ``gc``'s floor)
BLOB_MIN_AGE = 600.0
#: seconds between blob collections (a scan of the blob directory)
BLOB_INTERVAL = 300.0


@dataclass
class RetentionStats:
    steps: int = 0
    jobs: int = 0
    tasks: int = 0
    locks: int = 0
    events: int = 0
    blobs: int = 0
    errors: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def interval_for(retention: float) -> float:
    """Seconds between steps: a quarter of the retention, between 1 s and 60 s."""
    return min(max(retention / 4, 1.0), 60.0)


class Retention:
    """Forgets what is older than ``retention`` seconds, in small steps."""

    def __init__(self, retention: float, interval: float | None = None) -> None:
        self.retention = retention
        self.interval = interval if interval is not None else interval_for(retention)
        self.stats = RetentionStats()
        self._blobs_at = 0.0

    def step(self, store: Store, now: float | None = None) -> int:
        """One step; the number of jobs forgotten (STEP_JOBS: more may be due)."""
        now = time.time() if now is None else now
        cutoff = now - self.retention
        forgotten = 0
        for job_id in store.retention.expired_jobs(cutoff, STEP_JOBS):
            try:
                counts = store.admin.forget_job(job_id)
            except JobActiveError:
                continue  # results not yet in its Parquet output, or it was retried
            forgotten += 1
            self.stats.tasks += counts["tasks"]
        self.stats.jobs += forgotten
        self.stats.locks += store.retention.release_finished()
        self.stats.events += store.retention.forget_events(cutoff)
        if now - self._blobs_at >= BLOB_INTERVAL:
            self._blobs_at = now
            report = store.blobs.collect_garbage(min_age=max(self.retention, BLOB_MIN_AGE))
            self.stats.blobs += report.removed
        self.stats.steps += 1
        return forgotten

    def run(self, store_for: Callable[[], Store], stop: threading.Event) -> None:
        """Step every ``interval`` until ``stop`` (at once again while a step was full);
        an error is logged and counted, and the next step tries again."""
        wait = self.interval
        while not stop.wait(wait):
            try:
                full = self.step(store_for()) >= STEP_JOBS
            except (OSError, OomguardError) as err:
                self.stats.errors += 1
                self.stats.last_error = f"{type(err).__name__}: {err}"
                log.warning("retention step failed (tried again later): %s", err)
                full = False
            wait = 0.05 if full else self.interval


__all__ = ["Retention", "RetentionStats", "interval_for"]
