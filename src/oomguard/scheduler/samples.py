"""The time series the dashboard draws, taken from the loop and written off it.

About once a second :meth:`Sampler.tick` (on the loop thread) takes a frozen snapshot of
what the scheduler holds in memory anyway: the budget, the memory admitted to attempts in
flight (in all and by job), the jobs it works on, its workers' pids. It hands the snapshot
to the sampler's own thread, which reads each worker's RSS and writes one row per job with
its own store connection. Nothing here blocks or breaks the loop: a full hand-over queue
drops the oldest snapshot, a write that fails is logged (once a minute at most) and the
next one is tried. Rows older than ``retention`` go; a job with more than ``max_per_job``
rows has its older half thinned. See docs/ARCHITECTURE.md ("The dashboard").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomguard.store.factory import open_store
from oomguard.store.protocol import Store
from oomguard.store.samples import Sample

if TYPE_CHECKING:
    from oomguard.scheduler.view import SchedulerView

log = logging.getLogger("oomguard.scheduler.samples")

#: seconds between two samples
SAMPLE_INTERVAL = 1.0
#: samples older than this are deleted (seconds: 14 days)
SAMPLE_RETENTION = 14 * 24 * 3600.0
#: a job with more rows than this has its older half thinned (about 5.5 hours a second)
MAX_SAMPLES_PER_JOB = 20_000
#: seconds between two prunes
PRUNE_INTERVAL = 60.0
#: snapshots waiting for the writer; past this the oldest is dropped
QUEUE_MAX = 120


@dataclass(frozen=True)
class Snapshot:
    """What the loop saw at ``ts``: the sampler's thread turns it into rows."""

    ts: float
    budget: int
    admitted: int
    #: job id -> (attempts in flight, bytes admitted to them); every active job is here
    jobs: Mapping[str, tuple[int, int]]
    #: worker name -> pid (empty where the workers are not local: Dask)
    workers: Mapping[str, int]


def snapshot(
    ts: float,
    budget: int,
    admitted: int,
    active: Iterable[str],
    running: Iterable[tuple[str, int]],
    workers: Mapping[str, int],
) -> Snapshot:
    """A :class:`Snapshot` from the active jobs and ``(job id, admitted bytes)`` of each
    attempt in flight."""
    jobs: dict[str, tuple[int, int]] = {job_id: (0, 0) for job_id in active}
    for job_id, limit in running:
        n, total = jobs.get(job_id, (0, 0))
        jobs[job_id] = (n + 1, total + limit)
    return Snapshot(ts, budget, admitted, jobs, dict(workers))


class Sampler:
    """Samples the scheduler every ``interval`` seconds into the store at ``path``."""

    def __init__(
        self,
        path: str,
        interval: float = SAMPLE_INTERVAL,
        retention: float = SAMPLE_RETENTION,
        max_per_job: int = MAX_SAMPLES_PER_JOB,
    ) -> None:
        self.path = path
        self.interval = interval
        self.retention = retention
        self.max_per_job = max_per_job
        self.written = 0
        self.failures = 0
        self._queue: deque[Snapshot] = deque(maxlen=QUEUE_MAX)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = 0.0
        self._pruned_at = 0.0
        #: jobs sampled since the last prune (only they can have too many rows)
        self._sampled: set[str] = set()
        self._warned_at = -PRUNE_INTERVAL

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="oomguard-samples", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``) and end the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def due(self) -> bool:
        """Whether the next :meth:`tick` takes a sample (the loop publishes a fresh view
        for it first)."""
        return self._thread is not None and time.time() - self._last >= self.interval

    def tick(self, view: SchedulerView) -> None:
        """Called by the loop at every step with the view it published: a snapshot when
        one is due. Never raises."""
        now = time.time()
        if now - self._last < self.interval or self._thread is None:
            return
        self._last = now
        self._take(view, now, None)

    def finished(self, view: SchedulerView, job_ids: Iterable[str]) -> None:
        """Jobs that just finished get a last sample (one that ran under a second still
        has its point on the time axis). Never raises."""
        if self._thread is not None:
            self._take(view, time.time(), job_ids)

    def _take(self, view: SchedulerView, now: float, job_ids: Iterable[str] | None) -> None:
        try:
            ids = view.active_jobs if job_ids is None else job_ids
            jobs: dict[str, tuple[int, int]] = dict.fromkeys(ids, (0, 0))
            jobs.update(view.in_flight)
            self.offer(Snapshot(now, view.budget, view.admitted, jobs, dict(view.workers)))
        except Exception:  # a sample is never worth the loop
            log.exception("could not take a sample")

    def offer(self, snap: Snapshot) -> None:
        """Queue ``snap`` for the writer (thread-safe; the oldest goes when full)."""
        self._queue.append(snap)
        self._wake.set()

    # -- the sampler's thread -------------------------------------------------------------

    def _run(self) -> None:
        store: Store | None = None
        try:
            while True:
                self._wake.wait(max(self.interval, 0.05))
                self._wake.clear()
                stopping = self._stop.is_set()
                if self._queue:
                    store = store or self._open()
                    if store is not None:
                        self._write(store)
                if stopping:
                    return
        finally:
            if store is not None:
                store.close()

    def _open(self) -> Store | None:
        try:
            # Never queue long behind a writer.
            store = open_store(self.path, create=False, busy_timeout=2.0)
            return store
        except Exception as err:
            self._warn(f"cannot open the store for samples: {err}")
            return None

    def _write(self, store: Store) -> None:
        from oomguard.procfs import tree_rss

        snaps = []
        while self._queue:
            snaps.append(self._queue.popleft())
        # One reading per worker for what waited together (normally a single snapshot).
        rss = {pid: tree_rss(pid) for snap in snaps for pid in snap.workers.values()}
        rows = [
            Sample(
                job_id=job_id,
                ts=snap.ts,
                budget_bytes=snap.budget,
                admitted_bytes=snap.admitted,
                job_admitted_bytes=admitted,
                running=n,
                workers={name: rss[pid] for name, pid in snap.workers.items()},
            )
            for snap in snaps
            for job_id, (n, admitted) in snap.jobs.items()
        ]
        try:
            store.samples.record(rows)
            # The loop's connection leaves the WAL's checkpoints to this thread (on the
            # loop, one every 1,000 WAL pages cost it 2-4 ms of CPU and the fsyncs' wait).
            store.checkpoint()
            self.written += len(rows)
            self._sampled.update(row.job_id for row in rows)
            now = time.time()
            if now - self._pruned_at >= PRUNE_INTERVAL:
                self._pruned_at = now
                jobs, self._sampled = self._sampled, set()
                store.samples.prune(now - self.retention, self.max_per_job, jobs)
        except Exception as err:
            self.failures += 1
            self._warn(f"could not record {len(rows)} sample(s): {type(err).__name__}: {err}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= PRUNE_INTERVAL:
            self._warned_at = now
            log.warning("%s (the dashboard's memory chart has a gap; the job goes on)", message)


__all__ = ["SAMPLE_INTERVAL", "Sampler", "Snapshot", "snapshot"]
