"""The scheduler loop: store → admission → executor → recorder → store.

One thread owns the loop. Tasks come from the store in bounded windows (never a whole job
in memory); the loop admits them by memory and dispatches them to the executor. How each
attempt begins and ends is the :class:`~oomguard.scheduler.recorder.AttemptRecorder`'s:
its writes are committed here in grouped transactions (the attempt's end, its result, its
task's new state, the release of its lock and dependants commit together). Other threads
use only :meth:`Scheduler.view` and the thread-safe ``request_parts``, ``set_window`` and
``tasks_added``. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from oomguard.config import RunnerConfig
from oomguard.executors.base import Attempt, Executor, Held, call_item
from oomguard.notify.notice import job_notices
from oomguard.results.parquet import PartPolicy, write_pending_parts
from oomguard.results.sink import PartSink
from oomguard.scheduler.admission import Admission, Estimates, KeyState, Role
from oomguard.scheduler.batching import batch_cap, followers
from oomguard.scheduler.budget import check_limits, derive_budget
from oomguard.scheduler.recorder import AttemptRecorder, Running
from oomguard.scheduler.samples import Sampler
from oomguard.scheduler.view import Announcements, SchedulerView
from oomguard.store.blobs import BLOB_THRESHOLD
from oomguard.store.leases import Recovery
from oomguard.store.sqlite import SqliteStore, TaskRow
from oomguard.store.writes import PendingWrites
from oomguard.units import format_size

if TYPE_CHECKING:
    from oomguard.cgroups.detect import IsolationPlan
    from oomguard.kernlog.watch import KernelLogWatch
    from oomguard.notify.base import Notifier

log = logging.getLogger("oomguard.scheduler")

#: how long the final pass waits for the part thread to finish what it is writing
PART_DRAIN_TIMEOUT = 120.0
#: how often (seconds) the read-only view for other threads is refreshed, and the loop
#: looks for jobs that other processes added
VIEW_INTERVAL = ACTIVE_INTERVAL = 0.25
#: the longest a step waits for an outcome (outcomes, new tasks and stops end it at once)
STEP_WAIT = 0.25
#: the wait while something needs a closer look: tasks held in the window with nothing
#: running, a death or an OOM kill waiting for the kernel's line
BLOCKED_WAIT = 0.02
#: how long stopping waits for queued notifications to be delivered
NOTIFY_DRAIN_TIMEOUT = 10.0


class Scheduler:
    """Takes tasks from the store, admits them by memory, runs them on an executor; the
    :attr:`recorder` records how every attempt ended."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self.id = uuid.uuid4().hex
        self.store = SqliteStore(config.store)
        self.writes = PendingWrites()
        self.window: deque[TaskRow] = deque()
        self.window_size = config.window
        self.executor: Executor | None = None
        self.kmsg: KernelLogWatch | None = None
        self.sink: PartSink | None = None
        #: Sentry, webhooks, JSON logs (None: none configured)
        self.notifier: Notifier | None = None
        self.isolation: IsolationPlan | None = None
        #: the dashboard's time series, written on its own thread (scheduler/samples.py)
        self.sampler = Sampler(str(config.store))
        self.recovery: Recovery | None = None
        self.budget = 0
        self.admission: Admission
        self.estimates: Estimates
        self.recorder: AttemptRecorder
        self.started = False
        self._view = SchedulerView()
        self._view_at = 0.0
        self._active: list[str] = []
        self._active_at = 0.0
        self._heartbeat_at = 0.0
        self._parts_at = 0.0
        self._parts_swept = False
        self._cancel_check_at = 0.0
        self._refill_after = 0.0
        #: the window or the running attempts held something at the last refill
        self._had_work = False
        self._tasks_added = False  # another thread added tasks: look for new jobs now
        self._batch_sizes: dict[str, int] = {}
        #: jobs whose parts a waiter asked for (from other threads: a deque is thread-safe)
        self._parts_asked: deque[str] = deque()
        #: waiters of other threads (Job.wait) wake when a job finishes or the loop stops
        self.announcements = Announcements()

    # -- start and stop ---------------------------------------------------------------

    def start(self) -> None:
        from oomguard.cgroups.detect import detect_isolation
        from oomguard.kernlog.watch import KernelLogWatch
        from oomguard.notify.build import build_notifier, outbox_filter, start_outbox

        config = self.config
        self.notifier = build_notifier(config)  # a bad DSN or secret file stops us here
        self.recovery = self.store.leases.register(self.id, config.lease_ttl, config.lost_retries)
        start_outbox(self.notifier)  # the store is ours: deliver what it holds
        self.isolation = detect_isolation(config.isolation)
        if config.executor == "local":
            check_limits(config, self.isolation.own_limit_bytes)
        executor = self.executor = self._make_executor(self.isolation)
        executor.start()
        own_limit = self.isolation.own_limit_bytes
        # A remote executor (Dask) knows the memory of its workers better than this machine.
        remote_budget = executor.memory_budget()
        if remote_budget is not None and config.memory_budget is None:
            self.budget = remote_budget
        else:
            self.budget = derive_budget(config, own_limit)
        cap = min(config.worker_memory or self.budget, self.budget)
        remote_cap = executor.max_task_memory()
        if remote_cap is not None:
            cap = min(cap, remote_cap)
        self.store.admin.set_meta("memory_budget", str(self.budget))
        self.store.admin.set_meta("isolation", self.isolation.mode)
        self.admission = Admission(
            budget=self.budget, cap=cap, starvation_wait=config.starvation_wait
        )
        self.estimates = Estimates(default=config.default_task_memory)
        self.estimates.load(self.store.estimate_rows(), cap)
        self.kmsg = KernelLogWatch(config.kernel_log)
        self.kmsg.start()
        self.recorder = AttemptRecorder(
            config=config,
            scheduler_id=self.id,
            store=self.store,
            writes=self.writes,
            admission=self.admission,
            estimates=self.estimates,
            executor=executor,
            kmsg=self.kmsg,
            requeue=self.window.appendleft,
            next_attempt=self.store.next_attempt_id(),
            notify=self.notifier.notify if self.notifier is not None else None,
            keep=outbox_filter(self.notifier),
        )
        self.sink = PartSink(self.store.path, PartPolicy.of(config))
        self.sink.start()
        self.sampler.start()
        self.started = True
        self._publish_view(force=True)
        log.info(
            "scheduler %s: isolation %s (%s); budget %s; %d workers",
            self.id[:8],
            self.isolation.mode,
            self.isolation.reason,
            format_size(self.budget),
            config.workers,
        )

    def _make_executor(self, isolation: IsolationPlan) -> Executor:
        if self.config.executor == "dask":
            from oomguard.executors.dask import DaskExecutor

            return DaskExecutor(
                self.config, isolation, blobs=self.store.blobs, blob_threshold=BLOB_THRESHOLD
            )
        from oomguard.executors.local import LocalExecutor

        return LocalExecutor(self.config, isolation)

    def stop(self) -> None:
        """Stop: running attempts end ``interrupted`` and their tasks (and the window's)
        go back to ready; the last Parquet parts are written; workers and their cgroups,
        the kernel-log and part threads, and the store are closed."""
        self.announcements.announce()
        try:
            if self.started:
                self._stop_attempts()
                if self.notifier is not None:
                    self._refresh_active(force=True)  # tell the jobs that just finished
        finally:
            if self.executor is not None:
                self.executor.stop()
            if self.kmsg is not None:
                self.kmsg.stop()
            if self.sink is not None:
                self.sink.stop()
            self.sampler.stop()
            if self.notifier is not None:
                self.notifier.close(NOTIFY_DRAIN_TIMEOUT)  # after the workers: they go first
            self.store.close()
            self.started = False
            self._view = SchedulerView()
            self.announcements.announce()

    def _stop_attempts(self) -> None:
        self.flush()
        running = list(self.recorder.running.values())
        for run in running:
            # Stopping is not the task's fault: put it back without using an attempt.
            self.recorder.interrupt(run)
        self.flush()
        self.store.leases.requeue_tasks([r.task.id for r in running] + [t.id for t in self.window])
        self._write_parts(final=True)
        self.store.leases.unregister(self.id)

    # -- the loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event, until_idle: bool = False) -> None:
        """Run until ``stop`` is set, or nothing is left to do."""
        while not stop.is_set():
            self.step()
            if until_idle and self.idle():
                self.flush()
                self._write_parts(final=True)
                return

    def idle(self) -> bool:
        recorder = self.recorder
        if self.window or recorder.running or recorder.deaths or self.writes:
            return False
        self._refresh_active(force=True)
        return not self._active

    def step(self, timeout: float | None = None) -> None:
        """One pass: take tasks, dispatch, wait up to ``timeout`` for outcomes (less when
        something is due sooner: :meth:`_wait`), record them, and the periodic work."""
        assert self.executor is not None, "start() first"
        recorder = self.recorder
        now = time.time()
        self._refill(now)
        self._dispatch(now)
        most = STEP_WAIT if timeout is None else timeout
        for event in self.executor.poll(self._wait(now, most)):
            recorder.handle(event)  # one attempt that cannot be recorded never stops the loop
        recorder.finish_deaths()
        if stops := recorder.broken.take():
            self._stop_jobs(stops)
        self._check_timeouts()
        now = time.time()
        if self.writes and (
            len(self.writes) >= self.config.commit_max
            or now - self.writes.first_at >= self.config.commit_interval
            or not recorder.running
        ):
            self.flush()
        if now - self._heartbeat_at >= self.config.heartbeat_interval:
            self.store.leases.heartbeat(self.id)
            self._heartbeat_at = now
        if now - self._cancel_check_at >= 1.0:
            self._cancel_check_at = now
            self._check_cancelled()
        if now - self._parts_at >= self.config.part_interval:
            self._write_parts(final=False)
            self._parts_at = now
        self.sampler.tick(self)
        self._publish_view()

    def _wait(self, now: float, most: float) -> float:
        """How long this step may wait for an outcome: attempts that run for seconds wake
        the loop a few times a second, not 20 (outcomes, new tasks and stops wake it at
        once: :meth:`tasks_added`); sooner when a commit, a timeout or a kernel line is
        due, or when tasks wait in the window with nothing running (a lock, the budget)."""
        recorder = self.recorder
        wait = most
        if self.window and not recorder.running:
            wait = min(wait, BLOCKED_WAIT)
        if recorder.deaths or len(recorder.survivors):
            wait = min(wait, BLOCKED_WAIT)
        if self.writes:
            wait = min(wait, max(0.0, self.writes.first_at + self.config.commit_interval - now))
        if recorder.timed:
            deadlines = [r.deadline for r in recorder.timed.values() if r.deadline is not None]
            if deadlines:
                wait = min(wait, max(0.0, min(deadlines) - time.monotonic()))
        return wait

    # -- what other threads may call -----------------------------------------------------

    def set_window(self, size: int) -> None:
        """Change how many tasks the scheduler keeps in memory (thread-safe)."""
        self.window_size = max(1, size)

    def tasks_added(self) -> None:
        """Tasks were added (thread-safe): look for new jobs at once."""
        self._tasks_added = True
        self.wake()

    def wake(self) -> None:
        """End the loop's wait for outcomes now (thread-safe): a stop, new work."""
        executor = self.executor
        if executor is not None:
            executor.wake()

    def view(self) -> SchedulerView:
        """A consistent snapshot for other threads (refreshed every ``VIEW_INTERVAL``)."""
        return self._view

    def request_parts(self, job_id: str) -> None:
        """Have ``job_id``'s due parts written at the next pass (thread-safe)."""
        self._parts_asked.append(job_id)
        self.wake()

    def parts_error(self, job_id: str) -> str | None:
        """Why the last try to write ``job_id``'s Parquet parts failed (thread-safe)."""
        return None if self.sink is None else self.sink.errors.get(job_id)

    def _publish_view(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._view_at < VIEW_INTERVAL:
            return
        self._view_at = now
        assert self.executor is not None and self.isolation is not None
        self._view = SchedulerView(
            started=self.started,
            budget=self.budget,
            admitted=self.admission.total,
            running=len(self.recorder.running),
            window=len(self.window),
            isolation=self.isolation.mode,
            isolation_reason=self.isolation.reason,
            warnings=tuple(self.isolation.warnings),
            lost_attempts_recovered=self.recovery.lost_attempts if self.recovery else 0,
            workers=self.executor.worker_pids(),
            worker_isolation=self.executor.worker_isolation(),
            recycles=dict(self.executor.recycles),
            leftovers=dict(self.executor.leftovers),
            duplicates=self.recorder.stats.duplicates,
        )

    # -- taking tasks -----------------------------------------------------------------

    def _refresh_active(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._active_at > ACTIVE_INTERVAL:
            before = self._active
            self._active = self.store.active_jobs()
            self._active_at = now
            finished = set(before) - set(self._active)
            self.recorder.broken.forget(finished)
            if finished:
                self.sampler.finished(self, finished)
                self.announcements.announce()
            # A job that finished by any path (its last outcome a failure, cancelled,
            # lost) has its last parts due now, not only when a result arrives.
            self.recorder.parts_due.update(finished)
            self._batch_sizes = {j: n for j, n in self._batch_sizes.items() if j not in finished}
            if self.notifier is not None:
                for notice in job_notices(self.store, before, self._active):
                    self.notifier.notify(notice)

    def _refill(self, now: float) -> None:
        added = self._tasks_added
        if len(self.window) >= self.window_size // 2 or (now < self._refill_after and not added):
            return
        self._tasks_added = False
        # New tasks may be a new job; the last task in hand ending, a finished job (its
        # waiters hear it now, once, not at every idle step).
        in_hand = bool(self.window or self.recorder.running)
        self._refresh_active(force=added or (self._had_work and not in_hand))
        self._had_work = in_hand
        want = self.window_size - len(self.window)
        for job_id in self._active:
            if want <= 0:
                break
            low = self.store.low_group(job_id)
            if low is None:
                continue
            rows = self.store.take_ready(job_id, want, low + self._batch_size(job_id))
            # An aggregation goes first: its inputs were just made (held on a Dask worker).
            self.window.extendleft(reversed([r for r in rows if r.kind == "aggregate"]))
            self.window.extend(r for r in rows if r.kind != "aggregate")
            want -= len(rows)
        # Nothing more was ready: look again a little later, not at every step.
        self._refill_after = now + 0.02 if want > 0 else 0.0

    def _batch_size(self, job_id: str) -> int:
        """Open parameter groups allowed for a job: its own batch_size, else the config's."""
        size = self._batch_sizes.get(job_id)
        if size is None:
            spec = self.store.job(job_id)["spec"]
            size = int(spec.get("batch_size") or self.config.batch_size)
            self._batch_sizes[job_id] = size
        return size

    def _memory_key(self, task: TaskRow) -> str | None:
        return task.memory_key or task.fn

    def _dispatch(self, now: float) -> None:
        assert self.executor is not None
        if not self.window:
            return
        slots = self.executor.free_slots()
        if slots <= 0:
            return
        recorder = self.recorder
        # Never more than half a fair share of the window, so every worker gets some.
        share = max(1, len(self.window) // (2 * max(1, self.config.workers)))
        skipped: list[TaskRow] = []
        assignments: list[list[Running]] = []
        while self.window and slots > 0:
            task = self.window.popleft()
            if task.lock_key and task.lock_key in recorder.locks:
                skipped.append(task)
                continue
            key = self._memory_key(task)
            state = self.estimates.state(key)
            if state is KeyState.UNFIT:
                # Proved unfit by a kill at the cap: it fails without running.
                recorder.refuse_unfit(task, key, time.time())
                continue
            run = self._admit(task, key, state, now, slots)
            if run is None:
                skipped.append(task)
                # A task that does not fit blocks the ones behind it only when it starves.
                if len(skipped) > 256:
                    break
                continue
            group = [run]
            # Batch short tasks of the same key for one worker (each still runs alone).
            most = min(share, batch_cap(recorder.durations.get(run.key)))
            if (
                most > 1
                and task.timeout is None
                and not task.lock_key
                and run.role is Role.NORMAL
                and run.key not in recorder.oom_keys
            ):
                for nxt in followers(self.window, task, run.key, most, self._memory_key):
                    group.append(recorder.begin(nxt, run.key, Role.NORMAL, run.limit, now, False))
            assignments.append(group)
            slots -= 1
        self.window.extendleft(reversed(skipped))
        if assignments:
            # Claims are durable before any of them runs: an attempt that kills its
            # scheduler (or the host) at once is still found, and counted, as lost.
            self.flush()
        for group in assignments:
            self.executor.submit(group, self._read_item)

    def _read_item(self, run: Attempt, held: Held | None = None) -> dict[str, Any]:
        return call_item(run, self.store, held)

    def _admit(
        self, task: TaskRow, key: str | None, state: KeyState, now: float, idle: int
    ) -> Running | None:
        """Start an attempt of ``task`` if admission has room for it (see
        :mod:`oomguard.scheduler.admission`), else None: it waits in the window."""
        estimate = self.estimates.estimate(key, task.memory)
        placement = self.admission.place(task.id, key, state, estimate, idle)
        if placement is None:
            return None
        return self.recorder.begin(task, key, placement.role, placement.limit, now, admit=True)

    def flush(self) -> None:
        """Commit the queued writes (grouped); a group that fails is applied task by task,
        failing only the tasks whose own writes break."""
        if not self.writes:
            return
        writes = self.writes.take()
        self.recorder.writes_taken()
        # What the attempts taught about their keys commits with them.
        dirty = self.estimates.take_dirty()
        try:
            self.recorder.stats.duplicates += self.store.apply(writes, dirty)
            dirty = []
        except sqlite3.OperationalError:
            raise  # the store itself fails (disk, lock): nothing one task did
        except Exception as err:
            # Something one task brought (a value SQLite refuses, a result blob that
            # cannot be written): fail only the tasks whose writes break.
            log.warning(
                "a grouped commit failed (%s: %s); recording task by task",
                type(err).__name__,
                err,
            )
            self.recorder.stats.duplicates += self.recorder.apply_by_task(writes)
        # Only what the store now holds is told (Sentry, webhooks, JSON logs).
        self.recorder.notices.release()
        dirty.extend(self.estimates.take_dirty())
        if dirty:
            self.store.put_estimates(dirty)

    def _check_timeouts(self) -> None:
        assert self.executor is not None
        if not self.recorder.timed:
            return
        now = time.monotonic()
        for run in list(self.recorder.timed.values()):
            if run.deadline is not None and now > run.deadline and run.worker is not None:
                run.deadline = None
                self.executor.kill(run, "timeout", {"timeout_s": run.task.timeout})

    def _stop_jobs(self, causes: dict[str, str]) -> None:
        """Stop jobs that cannot load their task (scheduler/broken.py): their failures are
        committed, their other tasks cancelled with the cause, their attempts killed."""
        self.flush()
        for job_id, cause in causes.items():
            log.error("job %s %s", job_id, cause)
            self.store.admin.stop_job(job_id, cause)
        self._check_cancelled()
        self._refresh_active(force=True)

    def _check_cancelled(self) -> None:
        assert self.executor is not None
        running = self.recorder.running
        ids = [r.task.id for r in running.values()] + [t.id for t in self.window]
        cancelled = self.store.cancelled_among(ids)
        if not cancelled:
            return
        self.window = deque(t for t in self.window if t.id not in cancelled)
        for task_id in cancelled:
            self.admission.forget(task_id)
        for run in list(running.values()):
            if run.task.id in cancelled:
                self.executor.kill(run, "cancel", {})

    # -- results ----------------------------------------------------------------------

    def _write_parts(self, final: bool) -> None:
        """Have the Parquet parts that are due written: on the sink's thread as the job
        runs; at ``final`` (stopping, or idle) here, after the sink has caught up."""
        self.flush()
        sink = self.sink
        due = self.recorder.parts_due
        while self._parts_asked:
            due.add(self._parts_asked.popleft())
        # Only jobs that may have new results: active ones, those with new results or that
        # just finished, those a waiter asked for, and those whose rows wait on time.
        # The first time, every job: a scheduler killed after the last result of a job was
        # stored but before its Parquet parts were written left them for us to write.
        everywhere = final or not self._parts_swept
        jobs = None if everywhere else set(self._active) | due
        self._parts_swept = True
        due.clear()
        if final or sink is None:
            if sink is not None:
                sink.drain(timeout=PART_DRAIN_TIMEOUT)
            write_pending_parts(
                self.store,
                PartPolicy.of(self.config),
                final=final,
                jobs=jobs,
                errors=sink.errors if sink is not None else None,
            )
        elif jobs is None or jobs or sink.has_waiting():
            sink.request(jobs)
