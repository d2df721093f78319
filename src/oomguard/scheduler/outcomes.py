"""How attempts end: outcomes, worker deaths and their kernel evidence, retries.

A mixin of :class:`~oomguard.scheduler.loop.Scheduler`. Every ending is queued as store
operations (:meth:`AttemptOutcomes._op`) that the loop commits in grouped transactions:
the attempt's end, its result or the task's retry/failure, the release of its lock and
the event commit together. A worker death waits here up to ``kernel_log_wait`` for the
kernel's report, so an OOM kill is classified with its evidence, not as a bare SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from oomguard.config import RunnerConfig
from oomguard.diagnosis.classify import explain_death
from oomguard.jobs.model import FailureClass
from oomguard.scheduler.admission import Admission, Estimates
from oomguard.scheduler.retries import RetryPolicy, decide
from oomguard.store.sqlite import SqliteStore, TaskRow

log = logging.getLogger("oomguard.scheduler")


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
    _parts_due: set[str]
    store: SqliteStore

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
                # Its attempt already ended (killed after its outcome was discarded):
                # nothing to record, but the worker's cgroup must still go.
                self.executor.release(death.worker)
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
            "task_id": run.task.id,
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
            self._op("release_lock", {"attempt_id": run.attempt_id, "task_id": run.task.id})

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
        self._parts_due.add(task.job_id)

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
                        "task_id": task.id,
                    },
                )
            self._parts_due.add(task.job_id)
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
            try:
                if not self._finish_death(pending, now):
                    keep.append(pending)  # the kernel's report may still come
            except Exception as err:
                self._unhandled(("died", pending.running.attempt_id, pending.died, None), err)
        self.deaths = keep

    def _finish_death(self, pending: PendingDeath, now: float) -> bool:
        died = pending.died
        worker = died.worker
        explained = explain_death(
            died, pending.counters_after, self.kmsg, waited_enough=now >= pending.deadline
        )
        if explained is None:
            return False
        fc, evidence, peak = explained
        if fc == FailureClass.KILLED and worker.killed_by and worker.killed_by[0] == "cancel":
            self._end(pending.running, "failed", FailureClass.KILLED.value, evidence, peak)
        else:
            self._failed(pending.running, fc, None, evidence, peak)
        self.executor.release(worker)
        return True

    # -- when recording itself fails ---------------------------------------------------

    def _unhandled(self, event: tuple[Any, ...], err: Exception) -> None:
        """An executor event that could not be recorded (a bug, or something one task
        brought): its attempt fails as ``error`` saying so, and the loop goes on."""
        log.error("could not record %s of attempt %s", event[0], event[1], exc_info=err)
        if event[0] == "died":
            with contextlib.suppress(Exception):
                self.executor.release(event[2].worker)
        run = self.running.get(event[1])
        if run is None:
            return
        message = f"error: oomguard could not record this attempt: {type(err).__name__}: {err}"
        self._failed(run, FailureClass.ERROR, message, {"internal_error": _trace(err)}, None)

    def _apply_by_task(self, ops: list[tuple[str, Any]]) -> int:
        """Apply ``ops`` one task at a time; a task whose writes fail is failed as
        ``error`` with the reason, and its attempts ended, in a transaction of its own."""
        by_task: dict[Any, list[tuple[str, Any]]] = {}
        for op in ops:
            by_task.setdefault(op[1].get("task_id"), []).append(op)
        duplicates = 0
        for task_id, group in by_task.items():
            try:
                duplicates += self.store.apply(group)
            except sqlite3.OperationalError:
                raise
            except Exception as err:
                if task_id is None:
                    raise
                log.error("task %s: its outcome could not be stored", task_id, exc_info=err)
                self.store.apply(self._unrecordable(task_id, group, err))
        return duplicates

    def _unrecordable(
        self, task_id: int, group: list[tuple[str, Any]], err: Exception
    ) -> list[tuple[str, Any]]:
        """Writes that fail ``task_id`` because its own writes (``group``) failed."""
        what = "result" if any(name == "result" for name, _ in group) else "outcome"
        message = f"error: {what} could not be stored: {type(err).__name__}: {err}"
        evidence = json.dumps({"message": message, "internal_error": _trace(err)})
        now = time.time()
        fix: list[tuple[str, Any]] = []
        attempts: list[int] = []
        for name, params in group:
            if name == "insert_attempt":
                claim = dict(params, state="failed", ended_at=now, failure_class="error")
                fix.append((name, dict(claim, evidence=evidence)))
                attempts.append(params["id"])
            elif name == "end_attempt":
                attempts.append(params["id"])
        for attempt_id in attempts:
            fix.append(
                (
                    "end_attempt",
                    {
                        "id": attempt_id,
                        "task_id": task_id,
                        "state": "failed",
                        "ended_at": now,
                        "failure_class": "error",
                        "peak_bytes": None,
                        "evidence": evidence,
                        "pid": None,
                        "worker": None,
                    },
                )
            )
            fix.append(("release_lock", {"attempt_id": attempt_id, "task_id": task_id}))
            run = self.running.get(attempt_id)
            if run is not None:
                # Still running, with nothing of it recorded: stop it; its outcome will
                # find no attempt to end and is discarded.
                self._release(run)
                self.executor.kill(run, "cancel", {})
        task_fields: dict[str, Any] = next(
            (p for name, p in group if name in ("task_failed", "task_retry", "task_running")),
            {},
        )
        n = int(task_fields.get("n") or 0) or len(attempts)
        fix.append(
            (
                "task_failed",
                {
                    "task_id": task_id,
                    "n": n,
                    "oom_attempts": int(task_fields.get("oom_attempts") or 0),
                    "failure_class": "error",
                    "error": message,
                    "now": now,
                },
            )
        )
        place = self.store.task_place(task_id)
        if place is not None:
            job_id, grp, kind = place
            if kind == "task":
                fix.append(
                    (
                        "fail_dependent",
                        {
                            "job_id": job_id,
                            "grp": grp,
                            "now": now,
                            "error": f"replicate task {task_id} failed (error)",
                            "task_id": task_id,
                        },
                    )
                )
            fix.append(
                (
                    "insert_event",
                    {
                        "ts": now,
                        "job_id": job_id,
                        "task_id": task_id,
                        "kind": "attempt_failed",
                        "data": json.dumps({"class": "error", "retry": False, "final": "error"}),
                    },
                )
            )
            self._parts_due.add(job_id)
        return fix


def _trace(err: BaseException) -> list[str]:
    """The last lines of ``err``'s traceback, for the attempt's evidence."""
    return "".join(traceback.format_exception(err)).splitlines()[-12:]
