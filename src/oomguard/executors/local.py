"""The local executor: attempts run in the worker pool on this machine."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from oomguard.config import RunnerConfig
from oomguard.errors import OomguardError, TaskInputError, WorkerSpawnError
from oomguard.executors.base import Attempt, ItemReader, WorkerRef, input_error_event
from oomguard.executors.events import AttemptEnded, Event, Requeued, WorkerDied
from oomguard.jobs.model import KillReason
from oomguard.worker.messages import Idle, Outcome, Refused
from oomguard.worker.pool import PoolConfig, Worker, WorkerPool

if TYPE_CHECKING:
    from oomguard.cgroups.detect import IsolationPlan

log = logging.getLogger("oomguard.executor")

#: first wait after a worker failed to start; doubled each time, up to SPAWN_BACKOFF_MAX
SPAWN_BACKOFF = 0.5
SPAWN_BACKOFF_MAX = 30.0
#: failures in a row, with no worker left, after which the scheduler stops
SPAWN_TRIES = 5


class LocalExecutor:
    def __init__(self, config: RunnerConfig, isolation: IsolationPlan) -> None:
        self.config = config
        self.pool = WorkerPool(
            PoolConfig(
                workers=config.workers,
                isolation=isolation,
                oom_score_adj=config.worker_oom_score_adj,
                max_tasks_per_worker=config.max_tasks_per_worker,
                recycle_growth_fraction=config.recycle_growth_fraction,
                worker_memory=config.worker_memory,
                task_dir=config.task_dir,
            )
        )
        self.by_attempt: dict[int, Attempt] = {}
        #: events to hand out at the next poll (attempts whose inputs could not be read)
        self._events: list[Event] = []
        self._spawn_failures = 0
        self._spawn_after = 0.0

    @property
    def recycles(self) -> dict[str, int]:
        return self.pool.recycles

    @property
    def leftovers(self) -> dict[str, int]:
        return self.pool.leftovers

    def worker_pids(self) -> dict[str, int]:
        return {w.name: w.pid for w in list(self.pool.workers.values())}

    def worker_isolation(self) -> dict[str, str]:
        return {name: self.pool.mode for name in list(self.pool.workers)}

    def memory_budget(self) -> int | None:
        return None

    def max_task_memory(self) -> int | None:
        return None

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        self.pool.stop()

    def free_slots(self) -> int:
        return len(self.pool.idle_workers())

    def submit(self, group: Sequence[Attempt], read_item: ItemReader) -> None:
        items = []
        runs = []
        for run in group:
            try:
                items.append(read_item(run))
            except TaskInputError as err:
                self._events.append(input_error_event(run, err))
                continue
            runs.append(run)
        if not runs:
            return
        worker = self.pool.idle_workers()[0]
        limit = max(run.limit for run in group) or group[0].limit
        try:
            self.pool.set_limit(worker, limit)
        except OomguardError as err:
            # Its memory is above the new limit (v1 refuses): replace it with a fresh one.
            log.info("worker %s: %s; recycling it", worker.name, err)
            self.pool.retire(worker, "limit_change")
            try:
                worker = self.pool.spawn()
                self.pool.set_limit(worker, limit)
            except Exception as spawn_err:
                # Not the tasks' fault: they go back to the queue without using an attempt.
                self._events.extend(Requeued(run.attempt_id) for run in runs)
                self._spawn_failed(spawn_err)
                return
        for run in runs:
            run.worker = worker
            self.by_attempt[run.attempt_id] = run
        self.pool.send(worker, items, clean=runs[0].clean)

    def wake(self) -> None:
        self.pool.wake()

    def poll(self, timeout: float) -> list[Event]:
        events, self._events = self._events, []
        if events:
            timeout = 0.0
        self._replace()
        messages, died = self.pool.poll(timeout)
        for worker, msg in messages:
            if isinstance(msg, Outcome):
                self.by_attempt.pop(msg.attempt_id, None)
                worker.tasks_done += 1
                peak = msg.peak_bytes
                if peak is None and worker.peak_sample:
                    peak = worker.peak_sample
                events.append(
                    AttemptEnded(
                        msg.attempt_id,
                        msg.ok,
                        msg.payload,
                        msg.failure_class,
                        msg.message,
                        msg.evidence,
                        peak,
                        worker.name,
                    )
                )
            elif isinstance(msg, Refused):
                # It could not lower its limit even after giving memory back: nothing ran;
                # the attempts go back to the queue and the worker is recycled (its idle).
                log.info("worker %s: %s; recycling it", worker.name, msg.message)
                for attempt_id in msg.attempt_ids:
                    self.by_attempt.pop(attempt_id, None)
                    events.append(Requeued(attempt_id))
            elif isinstance(msg, Idle) and msg.recycle:
                self.pool.retire(worker, msg.recycle)
                self._replace()
        for death in died:
            counters_after = None
            if death.worker.cgroup is not None:
                try:
                    counters_after = death.worker.cgroup.counters()
                except OSError:
                    counters_after = None
            for i, attempt_id in enumerate(death.inflight):
                self.by_attempt.pop(attempt_id, None)
                if i == 0:
                    events.append(WorkerDied(attempt_id, death, counters_after))
                else:
                    events.append(Requeued(attempt_id))
            if not death.inflight:
                self.release(death.worker)
            self._replace()
        return events

    def _replace(self) -> None:
        """Bring the pool back to its size; a worker that cannot be started is tried again
        with backoff, and when none is left after :data:`SPAWN_TRIES` tries in a row the
        scheduler stops with the reason (:class:`WorkerSpawnError`)."""
        while len(self.pool.workers) < self.config.workers:
            if time.monotonic() < self._spawn_after:
                return
            try:
                self.pool.spawn()
            except Exception as err:  # EMFILE, ENOMEM, never ready, a cgroup refused
                self._spawn_failed(err)
                return
            self._spawn_failures = 0

    def _spawn_failed(self, err: Exception) -> None:
        self._spawn_failures += 1
        n = self._spawn_failures
        delay = min(SPAWN_BACKOFF * 2 ** (n - 1), SPAWN_BACKOFF_MAX)
        self._spawn_after = time.monotonic() + delay
        log.warning(
            "cannot start a worker (%d in a row, %d of %d running): %s; trying again in %.1f s",
            n,
            len(self.pool.workers),
            self.config.workers,
            err,
            delay,
        )
        if n >= SPAWN_TRIES and not self.pool.workers:
            raise WorkerSpawnError(
                f"no worker could be started ({n} tries in a row over "
                f"{sum(min(SPAWN_BACKOFF * 2**i, SPAWN_BACKOFF_MAX) for i in range(n - 1)):.0f} "
                f"s): {type(err).__name__}: {err}; `oomguard doctor` checks what workers need "
                "(a writable memory cgroup, file descriptors, memory)",
                tries=n,
            ) from err

    def kill(self, run: Attempt, reason: KillReason, evidence: dict[str, object]) -> None:
        worker = run.worker
        if isinstance(worker, Worker) and not worker.dead:
            self.pool.kill(worker, reason, evidence)

    def release(self, worker: WorkerRef) -> None:
        if isinstance(worker, Worker):
            self.pool.release_cgroup(worker)
