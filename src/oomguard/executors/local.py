"""The local executor: attempts run in the worker pool on this machine."""

from __future__ import annotations

import logging
from typing import Any

from oomguard.config import RunnerConfig
from oomguard.errors import OomguardError
from oomguard.executors.base import call_item
from oomguard.worker.pool import PoolConfig, Worker, WorkerPool

log = logging.getLogger("oomguard.executor")


class LocalExecutor:
    def __init__(self, config: RunnerConfig, isolation: Any) -> None:
        self.config = config
        self.pool = WorkerPool(
            PoolConfig(
                workers=config.workers,
                isolation=isolation,
                oom_score_adj=config.worker_oom_score_adj,
                max_tasks_per_worker=config.max_tasks_per_worker,
                recycle_growth_fraction=config.recycle_growth_fraction,
                worker_memory=config.worker_memory,
            )
        )
        self.by_attempt: dict[int, Any] = {}

    @property
    def recycles(self) -> dict[str, int]:
        return self.pool.recycles

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        self.pool.stop()

    def free_slots(self) -> int:
        return len(self.pool.idle_workers())

    def submit(self, group: list[Any], scheduler: Any) -> None:
        worker = self.pool.idle_workers()[0]
        limit = max(run.limit for run in group) or group[0].limit
        try:
            self.pool.set_limit(worker, limit)
        except OomguardError as err:
            # Its memory is above the new limit (v1 refuses): replace it with a fresh one.
            log.info("worker %s: %s; recycling it", worker.name, err)
            self.pool.retire(worker, "limit_change")
            worker = self.pool.spawn()
            self.pool.set_limit(worker, limit)
        items = []
        for run in group:
            run.worker = worker
            self.by_attempt[run.attempt_id] = run
            items.append(call_item(run, scheduler.store))
        self.pool.send(worker, items)

    def poll(self, timeout: float) -> list[tuple[Any, ...]]:
        messages, died = self.pool.poll(timeout)
        events: list[tuple[Any, ...]] = []
        for worker, msg in messages:
            if msg[0] == "outcome":
                _, attempt_id, ok, payload, fc, message, evidence, peak, _recycle = msg
                self.by_attempt.pop(attempt_id, None)
                worker.tasks_done += 1
                if peak is None and worker.peak_sample:
                    peak = worker.peak_sample
                events.append(
                    ("outcome", attempt_id, ok, payload, fc, message, evidence, peak, worker.name)
                )
            elif msg[0] == "idle" and msg[2]:
                self.pool.retire(worker, msg[2])
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
                    events.append(("died", attempt_id, death, counters_after))
                else:
                    events.append(("requeue", attempt_id))
            if not death.inflight:
                self.release(death.worker)
            self._replace()
        return events

    def _replace(self) -> None:
        while len(self.pool.workers) < self.config.workers:
            self.pool.spawn()

    def kill(self, run: Any, reason: str, evidence: dict[str, Any]) -> None:
        worker: Worker | None = run.worker
        if worker is not None and not worker.dead:
            self.pool.kill(worker, reason, evidence)

    def release(self, worker: Any) -> None:
        self.pool.release_cgroup(worker)
