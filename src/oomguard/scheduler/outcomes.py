"""How attempts end: outcomes, worker deaths and their kernel evidence, retries.

A mixin of :class:`~oomguard.scheduler.loop.Scheduler`. Every ending is queued as store
operations (:meth:`AttemptOutcomes._op`) that the loop commits in grouped transactions:
the attempt's end, its result or the task's retry/failure, the release of its lock and
the event commit together. A worker death waits here up to ``kernel_log_wait`` for the
kernel's report, so an OOM kill is classified with its evidence, not as a bare SIGKILL.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from oomguard.config import RunnerConfig
from oomguard.jobs.model import FailureClass
from oomguard.oom.classify import explain_death
from oomguard.scheduler.admission import Admission, Estimates
from oomguard.scheduler.retries import RetryPolicy, decide
from oomguard.store.sqlite import TaskRow


@dataclass
class Running:
    attempt_id: int
    task: TaskRow
    n: int
    key: str | None
    probe: bool
    limit: int
    started: float
    worker: Any = None
    deadline: float | None = None
    claim: dict[str, Any] | None = None  # the not-yet-flushed insert of this attempt


@dataclass
class PendingDeath:
    running: Running
    died: Any
    counters_after: Any
    deadline: float


@dataclass
class Stats:
    succeeded: int = 0
    failed_attempts: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0


class AttemptOutcomes:
    """The ending of attempts; the state it works on belongs to the scheduler."""

    config: RunnerConfig
    stats: Stats
    window: deque[TaskRow]
    running: dict[int, Running]
    locks: dict[str, int]
    ops: list[tuple[str, Any]]
    first_op: float
    deaths: list[PendingDeath]
    executor: Any
    kmsg: Any
    admission: Admission
    estimates: Estimates
    oom_keys: set[str | None]
    retry_policy: RetryPolicy
    _result_jobs: set[str]

    def _op(self, name: str, params: Any) -> None:
        if not self.ops:
            self.first_op = time.time()
        self.ops.append((name, params))

    def _handle(self, event: Any) -> None:
        kind = event[0]
        if kind == "outcome":
            _, attempt_id, ok, payload, fc, message, evidence, peak, worker = event
            run = self.running.get(attempt_id)
            if run is None:
                self.stats.duplicates += 1
                return
            if worker is not None:
                evidence = dict(evidence or {}, worker=worker)
            if ok:
                self._succeeded(run, payload, peak, evidence)
            else:
                self._failed(run, FailureClass(fc), message, evidence, peak)
        elif kind == "died":
            _, run_attempt, death, counters_after = event
            run = self.running.get(run_attempt)
            if run is None:
                return
            wait = self.config.kernel_log_wait if self.kmsg.unavailable is None else 0.0
            self.deaths.append(PendingDeath(run, death, counters_after, time.monotonic() + wait))
        elif kind == "requeue":
            # Sent to a worker that died before starting it: not an attempt of the task.
            run = self.running.pop(event[1], None)
            if run is not None:
                self._release(run)
                run.task.attempts -= 1
                if run.claim is not None:
                    self.ops = [
                        op
                        for op in self.ops
                        if op[1] is not run.claim
                        and not (
                            op[0] == "task_running"
                            and op[1]["task_id"] == run.task.id
                            and op[1]["n"] == run.n
                        )
                    ]
                else:
                    self._op(
                        "end_attempt",
                        self._end_params(
                            run,
                            "skipped",
                            None,
                            {"reason": "its worker died before starting it"},
                            None,
                        ),
                    )
                    self._op(
                        "task_requeued",
                        {"task_id": run.task.id, "n": run.task.attempts, "now": time.time()},
                    )
                self.window.appendleft(run.task)

    def _end_params(
        self,
        run: Running,
        state: str,
        fc: str | None,
        evidence: dict[str, Any] | None,
        peak: int | None,
    ) -> dict[str, Any]:
        return {
            "id": run.attempt_id,
            "state": state,
            "ended_at": time.time(),
            "failure_class": fc,
            "peak_bytes": peak,
            "evidence": json.dumps(evidence) if evidence else None,
            "pid": getattr(run.worker, "pid", None),
            "worker": getattr(run.worker, "name", None),
        }

    def _end(
        self,
        run: Running,
        state: str,
        fc: str | None,
        evidence: dict[str, Any] | None,
        peak: int | None,
    ) -> None:
        params = self._end_params(run, state, fc, evidence, peak)
        if run.claim is not None:
            run.claim.update(params)
            run.claim = None
        else:
            self._op("end_attempt", params)
        self._release(run)

    def _release(self, run: Running) -> None:
        self.running.pop(run.attempt_id, None)
        self.admission.end(run.attempt_id, run.key, run.probe)
        if run.task.lock_key and self.locks.get(run.task.lock_key) == run.attempt_id:
            del self.locks[run.task.lock_key]
            self._op("release_lock", {"attempt_id": run.attempt_id})

    def _succeeded(
        self, run: Running, payload: bytes | None, peak: int | None, evidence: dict[str, Any] | None
    ) -> None:
        self._end(run, "succeeded", None, None, peak)
        if run.task.memory is None or run.probe or peak:
            self.estimates.learn(run.key, peak)
        task = run.task
        self._op(
            "result",
            {
                "task_id": task.id,
                "job_id": task.job_id,
                "attempt_id": run.attempt_id,
                "value": payload,
                "kind": task.kind,
                "grp": task.grp,
                "now": time.time(),
                "n": run.n,
            },
        )
        self.stats.succeeded += 1
        self._result_jobs.add(task.job_id)

    def _failed(
        self,
        run: Running,
        fc: FailureClass,
        message: str | None,
        evidence: dict[str, Any],
        peak: int | None,
    ) -> None:
        self.stats.failed_attempts[fc.value] = self.stats.failed_attempts.get(fc.value, 0) + 1
        if message:
            evidence = dict(evidence, message=message)
        evidence.setdefault("limit_bytes", run.limit)
        if peak is not None:
            evidence.setdefault("peak_bytes", peak)
        self._end(run, "failed", fc.value, evidence, peak)
        task = run.task
        now = time.time()
        if fc.is_oom:
            self.oom_keys.add(run.key)
            task.oom_attempts += 1
        decision = decide(
            fc,
            policy=self.retry_policy,
            now=now,
            attempt=run.n,
            oom_attempts=task.oom_attempts,
            retries=task.retries,
            oom_retries=task.oom_retries,
            limit=run.limit,
            peak=peak,
            memory=task.memory,
            cap=self.admission.cap,
            message=message,
        )
        if decision.memory is not None:
            task.memory = decision.memory
            self.estimates.raise_to(run.key, task.memory, peak)
        retry_at, final_class, error = decision.retry_at, decision.final_class, decision.message
        if retry_at is not None:
            self._op(
                "task_retry",
                {
                    "task_id": task.id,
                    "n": run.n,
                    "oom_attempts": task.oom_attempts,
                    "memory": task.memory,
                    "not_before": retry_at,
                    "failure_class": fc.value,
                    "error": error,
                    "now": now,
                },
            )
        else:
            self._op(
                "task_failed",
                {
                    "task_id": task.id,
                    "n": run.n,
                    "oom_attempts": task.oom_attempts,
                    "failure_class": final_class.value,
                    "error": error,
                    "now": now,
                },
            )
            if task.kind == "task":
                self._op(
                    "fail_dependent",
                    {
                        "job_id": task.job_id,
                        "grp": task.grp,
                        "now": now,
                        "error": f"replicate task {task.id} failed ({final_class.value})",
                    },
                )
        self._op(
            "insert_event",
            {
                "ts": now,
                "job_id": task.job_id,
                "task_id": task.id,
                "kind": "attempt_failed",
                "data": json.dumps(
                    {
                        "attempt_id": run.attempt_id,
                        "class": fc.value,
                        "retry": retry_at is not None,
                        "final": final_class.value if retry_at is None else None,
                    }
                ),
            },
        )

    def _finish_deaths(self) -> None:
        if not self.deaths:
            return
        now = time.monotonic()
        keep = []
        for pending in self.deaths:
            died = pending.died
            worker = died.worker
            explained = explain_death(
                died, pending.counters_after, self.kmsg, waited_enough=now >= pending.deadline
            )
            if explained is None:
                keep.append(pending)  # the kernel's report may still come
                continue
            fc, evidence, peak = explained
            if fc == FailureClass.KILLED and worker.killed_by and worker.killed_by[0] == "cancel":
                self._end(pending.running, "failed", FailureClass.KILLED.value, evidence, peak)
                self.executor.release(worker)
                continue
            self._failed(pending.running, fc, None, evidence, peak)
            self.executor.release(worker)
        self.deaths = keep
