"""How attempts begin and end: claims, outcomes, worker deaths and their kernel evidence,
retries, estimates and locks.

:class:`AttemptRecorder` is composed into the scheduler loop
(:class:`~oomguard.scheduler.loop.Scheduler`), which owns windowing, admission and
dispatch. Every beginning and ending is queued as typed store writes
(:class:`~oomguard.store.writes.PendingWrites`) that the loop commits in grouped
transactions: the attempt's end, its result or the task's retry/failure, the release of its
lock and the event commit together. A worker death waits here up to ``kernel_log_wait`` for
the kernel's report, so an OOM kill is classified with its evidence, not as a bare SIGKILL.

When recording itself fails (a bug, or something one task brought), the attempt fails as
``error`` saying so and the loop goes on (:meth:`AttemptRecorder.unhandled`,
:meth:`AttemptRecorder.apply_by_task`). See docs/ARCHITECTURE.md, "The failure path".
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from oomguard.config import RunnerConfig
from oomguard.diagnosis.classify import explain_death
from oomguard.errors import StoreUnavailable, TakenOverError
from oomguard.executors.events import AttemptEnded, Event, Requeued, WorkerDied
from oomguard.jobs.model import FailureClass, KillReason
from oomguard.notify.notice import AttemptNotice
from oomguard.scheduler.admission import Admission, Estimates, KeyState, Role
from oomguard.scheduler.broken import BrokenJobs
from oomguard.scheduler.endings import Endings, TaskEnded
from oomguard.scheduler.notices import HeldNotices
from oomguard.scheduler.retries import (
    OWN_LIMIT_KILLS,
    Decision,
    RetryPolicy,
    after_key_kill,
    decide,
    kill_proof,
    unfit_message,
)
from oomguard.scheduler.running import YIELDED, Running
from oomguard.scheduler.survivors import HeldSurvivors
from oomguard.scheduler.unrecordable import Salvage, trace, unrecordable
from oomguard.store.writes import AttemptRow, PendingWrites, Write

if TYPE_CHECKING:
    from oomguard.cgroups.cgroup import CgroupCounters
    from oomguard.executors.base import Executor
    from oomguard.kernlog.watch import KernelLogWatch
    from oomguard.store.protocol import Store
    from oomguard.store.records import TaskRow
    from oomguard.worker.pool import Died

log = logging.getLogger("oomguard.scheduler")


@dataclass
class PendingDeath:
    running: Running
    died: Died
    counters_after: CgroupCounters | None
    deadline: float


@dataclass
class Stats:
    succeeded: int = 0
    failed_attempts: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0


class AttemptRecorder:
    """Begins and ends attempts, and decides what happens to their tasks."""

    def __init__(
        self,
        *,
        config: RunnerConfig,
        scheduler_id: str,
        store: Store,
        writes: PendingWrites,
        admission: Admission,
        estimates: Estimates,
        executor: Executor,
        kmsg: KernelLogWatch | None,
        requeue: Callable[[TaskRow], None],
        next_attempt: int | Iterator[int],
        notify: Callable[[AttemptNotice], None] | None = None,
        keep: Callable[[AttemptNotice], bool] | None = None,
        endings: Endings | None = None,
    ) -> None:
        self.config = config
        self.scheduler_id = scheduler_id
        self.store = store
        self.writes = writes
        self.admission = admission
        self.estimates = estimates
        self.executor = executor
        self.kmsg = kmsg
        self._requeue = requeue
        #: the ids of this scheduler's attempts: counted from ``next_attempt``, or (a
        #: replica) drawn from blocks reserved in the store
        self._attempt_ids = (
            itertools.count(next_attempt) if isinstance(next_attempt, int) else next_attempt
        )
        #: the id drawn ahead for the next attempt (:meth:`draw_attempt_id`)
        self._drawn: int | None = None
        #: locks are taken in the store before an attempt starts (replicas share them),
        #: not queued with its claim
        self.shared_locks = config.replica
        #: attempts begun since the queued writes were last taken (their claims in them)
        self._claimed: list[Running] = []
        #: told of every attempt's end (notifications: Sentry, webhooks, JSON logs)
        #: notices of endings, sent once the commit that records them is done
        self.notices = HeldNotices(notify, keep, writes)
        #: tasks of watched jobs that ended, told once committed (the Executor's)
        self.endings = endings if endings is not None else Endings()
        self.retry_policy = RetryPolicy(
            death_retries=config.death_retries,
            backoff=config.retry_backoff,
            backoff_max=config.retry_backoff_max,
        )
        self.stats = Stats()
        self.running: dict[int, Running] = {}
        #: the running attempts with a timeout (the loop looks only at these)
        self.timed: dict[int, Running] = {}
        #: lock key → the attempt holding it
        self.locks: dict[str, int] = {}
        self.deaths: list[PendingDeath] = []
        #: OOM kills a worker survived, waiting for the kernel's line
        self.survivors = HeldSurvivors(kmsg, config.kernel_log_wait)
        #: memory keys that had an OOM kill: their tasks are not batched
        self.oom_keys: set[str | None] = set()
        #: jobs whose Parquet parts may be due (a result arrived, a task failed for good)
        self.parts_due: set[str] = set()
        #: how long attempts of each memory key run (seconds, moving average)
        self.durations: dict[str | None, float] = {}
        #: jobs whose first attempts all fail loading the task: stopped, not retried
        self.broken = BrokenJobs()

    # -- beginning ----------------------------------------------------------------------

    def begin(
        self, task: TaskRow, key: str | None, role: Role, limit: int, now: float, admit: bool
    ) -> Running:
        """Claim an attempt of ``task`` (queued as writes; committed before it is sent)."""
        attempt_id = self.draw_attempt_id()
        self._drawn = None
        n = task.attempts + 1
        task.attempts = n
        run = Running(attempt_id, task, n, key, role, limit, now)
        run.clean = role is Role.CAP_PROBE or limit >= self.admission.cap
        self.admission.forget(task.id)
        if admit:
            self.admission.start(attempt_id, limit, key, role)
        if task.timeout:
            run.deadline = time.monotonic() + task.timeout
            self.timed[attempt_id] = run
        if task.lock_key:
            self.locks[task.lock_key] = attempt_id
        run.claim = AttemptRow(
            id=attempt_id,
            task_id=task.id,
            n=n,
            scheduler_id=self.scheduler_id,
            started_at=now,
            admitted_bytes=limit if admit else 0,
            limit_bytes=limit,
        )
        self.writes.insert_attempt(run.claim)
        self._claimed.append(run)
        self.writes.task_running(task.id, n, now, attempt_id)
        if task.lock_key and not self.shared_locks:
            self.writes.acquire_lock(task.lock_key, attempt_id, task.id)
        self.running[attempt_id] = run
        return run

    def draw_attempt_id(self) -> int:
        """The id the next attempt begun will have (drawn once: a replica takes a lock in
        its name before the attempt begins)."""
        if self._drawn is None:
            self._drawn = next(self._attempt_ids)
        return self._drawn

    def writes_taken(self) -> None:
        """The queued writes were taken to be committed (claims included): later changes
        to attempts are updates, not edits of a claim still in the queue."""
        for run in self._claimed:
            run.claim = None
        self._claimed.clear()

    # -- events from the executor ---------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Record one executor event; a failure to do so fails only its attempt."""
        try:
            self._handle(event)
        except Exception as err:
            self.unhandled(event, err)

    def _handle(self, event: Event) -> None:
        if isinstance(event, AttemptEnded):
            run = self.running.get(event.attempt_id)
            if run is None:
                self.stats.duplicates += 1
                return
            if self.survivors.hold(event):
                return  # back from finish_deaths with the kernel's line
            evidence = event.evidence  # read here; copied before anything is added
            elapsed = evidence.get("elapsed_s")
            if isinstance(elapsed, (int, float)):
                seen = self.durations.get(run.key)
                self.durations[run.key] = (
                    float(elapsed) if seen is None else 0.8 * seen + 0.2 * float(elapsed)
                )
            if event.ok:
                # A peak reached within memory an earlier attempt left is a bound only:
                # learned from a probe (it must teach something), never from the others.
                bound = bool(evidence.get("peak_bound")) and not run.probe
                # A success keeps no evidence, but for what it left running (and was killed).
                left = evidence.get("left_processes")
                kept = {"left_processes": left} if left else None
                self._succeeded(run, event.payload, event.peak_bytes, kept, learn=not bound)
            elif run.yielded:
                self._requeued(Requeued(run.attempt_id, YIELDED))
            else:
                # A class's value (as a Dask answer may carry it) is taken for its class.
                fc = FailureClass(event.failure_class or FailureClass.ERROR)
                evidence = dict(evidence)
                if event.worker is not None:
                    evidence["worker"] = event.worker
                self.failed(run, fc, event.message, evidence, event.peak_bytes)
        elif isinstance(event, WorkerDied):
            run = self.running.get(event.attempt_id)
            if run is None or run.yielded:
                # Its attempt already ended (killed after its outcome was discarded), or
                # it was stopped to yield to its key's cap probe: nothing to record as a
                # failure, but the worker's cgroup must still go.
                self.executor.release(event.death.worker)
                if run is not None:
                    self._requeued(Requeued(run.attempt_id, YIELDED))
                return
            readable = self.kmsg is not None and self.kmsg.unavailable is None
            wait = self.config.kernel_log_wait if readable else 0.0
            self.deaths.append(
                PendingDeath(run, event.death, event.counters_after, time.monotonic() + wait)
            )
        elif isinstance(event, Requeued):
            self._requeued(event)

    def _requeued(self, event: Requeued) -> None:
        # It never started: not an attempt of the task.
        run = self.running.pop(event.attempt_id, None)
        if run is None:
            return
        self.release(run)
        run.task.attempts -= 1
        if run.claim is not None:
            self.writes.discard_attempt(run.attempt_id)
        else:
            self._end_write(run, "skipped", None, {"reason": event.reason}, None)
            self.writes.task_requeued(run.task.id, run.task.attempts, time.time())
        self._requeue(run.task)

    # -- endings --------------------------------------------------------------------------

    def _end_write(
        self,
        run: Running,
        state: str,
        fc: FailureClass | None,
        evidence: dict[str, object] | None,
        peak: int | None,
    ) -> None:
        ended_at = time.time()
        fc_text = fc.value if fc is not None else None
        text = json.dumps(evidence) if evidence else None
        pid = run.worker.pid if run.worker is not None else None
        worker = run.worker.name if run.worker is not None else None
        if run.claim is not None:
            claim = run.claim
            claim.state, claim.ended_at, claim.failure_class = state, ended_at, fc_text
            claim.peak_bytes, claim.evidence, claim.pid = peak, text, pid
            claim.worker = worker or claim.worker
            run.claim = None
            return
        self.writes.end_attempt(
            run.attempt_id,
            run.task.id,
            state=state,
            failure_class=fc_text,
            evidence=text,
            peak_bytes=peak,
            pid=pid,
            worker=worker,
            ended_at=ended_at,
        )

    def end(
        self,
        run: Running,
        state: str,
        fc: FailureClass | None,
        evidence: dict[str, object] | None,
        peak: int | None,
    ) -> None:
        """End ``run``'s attempt (its task's state is someone else's to write)."""
        self._end_write(run, state, fc, evidence, peak)
        self.release(run)

    def release(self, run: Running) -> None:
        """Forget ``run``: its memory goes back to the budget, its lock is released."""
        self.running.pop(run.attempt_id, None)
        if self.timed:
            self.timed.pop(run.attempt_id, None)
        self.admission.end(run.attempt_id, run.key, run.probe)
        if run.task.lock_key and self.locks.get(run.task.lock_key) == run.attempt_id:
            del self.locks[run.task.lock_key]
            self.writes.release_lock(run.attempt_id, run.task.id)

    def interrupt(self, run: Running) -> None:
        """The scheduler stops: ``run`` ends ``interrupted`` (not the task's fault)."""
        self.end(run, "interrupted", None, {"reason": "the scheduler was stopped"}, None)
        self.notices.tell(run, "interrupted")

    def _succeeded(
        self,
        run: Running,
        payload: bytes | None,
        peak: int | None,
        evidence: dict[str, object] | None = None,
        learn: bool = True,
    ) -> None:
        self.end(run, "succeeded", None, evidence, peak)
        if learn:
            self.estimates.learn(run.key, peak)
        task = run.task
        self.writes.result(
            task.id,
            job_id=task.job_id,
            attempt_id=run.attempt_id,
            value=payload,
            kind=task.kind,
            grp=task.grp,
            n=run.n,
            now=time.time(),
        )
        if self.endings.watched(task.job_id):
            self.endings.hold(TaskEnded(task.job_id, task.id, task.grp, payload))
        self.stats.succeeded += 1
        self.broken.succeeded(task.job_id)
        self.parts_due.add(task.job_id)
        self.notices.tell(run, "succeeded", peak=peak)

    def failed(
        self,
        run: Running,
        fc: FailureClass,
        message: str | None,
        evidence: dict[str, object],
        peak: int | None,
    ) -> None:
        """End ``run`` as failed with ``fc``; retry its task or fail it for good."""
        if message:
            evidence = dict(evidence, message=message)
        if run.cancelled:
            # Its task was cancelled (or its job stopped) while it ran, and it ended before
            # the kill for that (on its own, or by the kernel): the attempt keeps its
            # class; its task stays cancelled (no retry to resurrect it).
            self.end(run, "failed", fc, evidence, peak)
            self.notices.tell(run, "cancelled", fc, evidence, peak)
            return
        self.stats.failed_attempts[fc.value] = self.stats.failed_attempts.get(fc.value, 0) + 1
        evidence.setdefault("limit_bytes", run.limit)
        if peak is not None:
            evidence.setdefault("peak_bytes", peak)
        self.end(run, "failed", fc, evidence, peak)
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
        if fc in OWN_LIMIT_KILLS:
            # A kill at the attempt's own limit is knowledge for its whole key, at once.
            decision = self._key_killed(run, fc, peak, decision)
            if self.estimates.state(run.key) is KeyState.LEARNING:
                self._yield_to_cap_probe(run)
        if self.broken.failed(task.job_id, fc, message) is not None:
            # Its job cannot load its task: retrying repeats the failure (the job stops).
            decision = dataclasses.replace(decision, retry_at=None, final_class=fc)
        retry_at, final_class = decision.retry_at, decision.final_class
        if retry_at is not None:
            self.writes.task_retry(
                task.id,
                n=run.n,
                oom_attempts=task.oom_attempts,
                memory=task.memory,
                not_before=retry_at,
                failure_class=fc.value,
                error=decision.message,
                now=now,
            )
        else:
            self._fail_task(task, run.n, final_class, decision.message, now)
        self.writes.event(
            task.job_id,
            task.id,
            "attempt_failed",
            json.dumps(
                {
                    "attempt_id": run.attempt_id,
                    "class": fc.value,
                    "retry": retry_at is not None,
                    "final": final_class.value if retry_at is None else None,
                }
            ),
        )
        outcome = "retrying" if retry_at is not None else "failed"
        self.notices.tell(run, outcome, fc, evidence, peak, decision)

    def _key_killed(
        self, run: Running, fc: FailureClass, peak: int | None, decision: Decision
    ) -> Decision:
        """Fold an OOM kill at ``run``'s own limit into its key (see
        :mod:`oomguard.scheduler.admission`); once the key is proved unfit (killed at the
        cap, now or before), the task fails without another try."""
        cap = self.admission.cap
        state = self.estimates.state(run.key)
        if state is not KeyState.UNFIT:
            # Only a key named for memory (--memory-key, @task(memory_key=)) speaks for
            # all its tasks at the cap; the default key (the function) is too coarse.
            explicit = run.task.memory_key is not None
            proof = kill_proof(run, fc, peak)
            state = self.estimates.killed(run.key, run.limit, peak, cap, proof, explicit)
        unfit = unfit_message(run.key, self.estimates.proof(run.key), cap)
        return after_key_kill(decision, state, unfit)

    def _yield_to_cap_probe(self, killed: Running) -> None:
        """The key of ``killed`` now needs more than the limit that killed it: its other
        attempts started while it was unknown (its probe, a sibling beside it) and running
        below the cap are stopped and go back to the queue uncounted, so the key's next
        kill, if any, is its cap probe's (at most two kills a key: docs/ARCHITECTURE.md,
        "Admission"). Attempts at a limit the key was known to fit in run on: they are
        more likely to finish than to die, and stopping them would run them again."""
        cap = self.admission.cap
        for other in list(self.running.values()):
            if (
                other is not killed
                and other.key == killed.key
                and other.role in (Role.PROBE, Role.SIBLING)
                and other.limit < cap
                and not other.yielded
                and other.worker is not None
            ):
                other.yielded = True
                self.executor.kill(other, KillReason.CANCEL, {"reason": YIELDED})

    def refuse_unfit(self, task: TaskRow, key: str | None, now: float) -> None:
        """Fail a task of a key proved unfit, without running it."""
        message = unfit_message(key, self.estimates.proof(key), self.admission.cap)
        self.admission.forget(task.id)
        self._fail_task(task, task.attempts, FailureClass.NEEDS_MORE_MEMORY, message, now)
        self.writes.event(
            task.job_id,
            task.id,
            "needs_more_memory",
            json.dumps({"memory_key": key, "proof": self.estimates.proof(key)}),
        )

    def _fail_task(
        self, task: TaskRow, n: int, fc: FailureClass, error: str | None, now: float
    ) -> None:
        self.writes.task_failed(
            task.id,
            n=n,
            oom_attempts=task.oom_attempts,
            failure_class=fc.value,
            error=error,
            now=now,
        )
        self.endings.hold(TaskEnded(task.job_id, task.id, task.grp, None, fc.value))
        if task.kind == "task":
            self.writes.fail_dependent(
                task.id,
                task.job_id,
                task.grp,
                f"replicate task {task.id} failed ({fc.value})",
                now,
            )
        self.parts_due.add(task.job_id)

    # -- deaths ---------------------------------------------------------------------------

    def finish_deaths(self) -> None:
        """Classify the deaths whose kernel evidence is in (or waited for long enough)."""
        for ended in self.survivors.due():
            self.handle(ended)
        if not self.deaths:
            return
        now = time.monotonic()
        keep = []
        for pending in self.deaths:
            try:
                if not self._finish_death(pending, now):
                    keep.append(pending)  # the kernel's report may still come
            except Exception as err:
                self.unhandled(WorkerDied(pending.running.attempt_id, pending.died, None), err)
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
        if (
            fc == FailureClass.KILLED
            and worker.killed_by
            and worker.killed_by[0] == KillReason.CANCEL
        ):
            self.end(pending.running, "failed", FailureClass.KILLED, evidence, peak)
            self.notices.tell(pending.running, "cancelled", FailureClass.KILLED, evidence, peak)
        else:
            self.failed(pending.running, fc, None, evidence, peak)
        self.executor.release(worker)
        return True

    # -- notifications: every ending, told to the notifier ---------------------------------

    # -- when recording itself fails ------------------------------------------------------

    def unhandled(self, event: Event, err: Exception) -> None:
        """An executor event that could not be recorded (a bug, or something one task
        brought): its attempt fails as ``error`` saying so, and the loop goes on."""
        log.error(
            "could not record %s of attempt %s",
            type(event).__name__,
            event.attempt_id,
            exc_info=err,
        )
        if isinstance(event, WorkerDied):
            with contextlib.suppress(Exception):
                self.executor.release(event.death.worker)
        run = self.running.get(event.attempt_id)
        if run is None:
            return
        message = f"error: oomguard could not record this attempt: {type(err).__name__}: {err}"
        self.failed(run, FailureClass.ERROR, message, {"internal_error": trace(err)}, None)

    def apply_by_task(self, writes: list[Write]) -> int:
        """Commit ``writes`` one task at a time; a task whose writes fail is failed as
        ``error`` with the reason, its attempts ended, in a transaction of its own."""
        by_task: dict[int | None, list[Write]] = {}
        for write in writes:
            by_task.setdefault(write.task_id, []).append(write)
        duplicates = 0
        for task_id, group in by_task.items():
            try:
                duplicates += self.store.apply(group, scheduler_id=self.scheduler_id)
            except (StoreUnavailable, TakenOverError):
                raise
            except Exception as err:
                if task_id is None:
                    raise
                log.error("task %s: its outcome could not be stored", task_id, exc_info=err)
                self._salvage(unrecordable(task_id, group, err, self.store.task_place(task_id)))
                self.notices.unrecorded.add(task_id)
        return duplicates

    def _salvage(self, salvage: Salvage) -> None:
        for attempt_id in salvage.attempt_ids:
            run = self.running.get(attempt_id)
            if run is not None:
                # Still running, with nothing of it recorded: stop it; its outcome will
                # find no attempt to end and is discarded.
                self.release(run)
                self.executor.kill(run, KillReason.CANCEL, {})
        if salvage.job_id is not None:
            self.parts_due.add(salvage.job_id)
        self.store.apply(salvage.writes, scheduler_id=self.scheduler_id)
