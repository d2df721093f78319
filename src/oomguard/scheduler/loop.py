"""The loop that steps: store → window → dispatch → executor → recorder → store.

One thread owns the loop; :meth:`Scheduler.step` is one pass. The parts it steps are built
at start by the composition root (:mod:`~oomguard.scheduler.compose`): the window
(:mod:`~oomguard.scheduler.window`) takes tasks from the store, dispatch
(:mod:`~oomguard.scheduler.dispatch`) admits them by memory and submits them, and how each
attempt begins and ends is the :class:`~oomguard.scheduler.recorder.AttemptRecorder`'s:
its writes are committed here in grouped transactions (the attempt's end, its result, its
task's new state, the release of its lock and dependants commit together). Other threads
use only :meth:`Scheduler.view` and the thread-safe ``request_parts``, ``set_window`` and
``tasks_added``. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from oomguard.config import RunnerConfig
from oomguard.errors import StoreUnavailable, TakenOverError
from oomguard.jobs.model import KillReason
from oomguard.notify.notice import job_notices
from oomguard.results.parquet import PartPolicy, write_pending_parts
from oomguard.scheduler.compose import NOTIFY_DRAIN_TIMEOUT, Parts, assemble
from oomguard.scheduler.endings import Endings
from oomguard.scheduler.lease import LeaseKeeper, heartbeat_every
from oomguard.scheduler.running import Running
from oomguard.scheduler.samples import Sampler
from oomguard.scheduler.view import Announcements, SchedulerView
from oomguard.scheduler.window import Window
from oomguard.store.factory import open_store
from oomguard.store.writes import PendingWrites
from oomguard.units import format_size

if TYPE_CHECKING:
    from oomguard.cgroups.detect import IsolationPlan
    from oomguard.executors.base import Executor
    from oomguard.scheduler.admission import Admission, Estimates
    from oomguard.scheduler.recorder import AttemptRecorder
    from oomguard.store.wakeups import Wakeups

log = logging.getLogger("oomguard.scheduler")

#: how long the final pass waits for the part thread to finish what it is writing
PART_DRAIN_TIMEOUT = 120.0
#: how often (seconds) the read-only view for other threads is refreshed, and the loop
#: looks for jobs that other processes added
VIEW_INTERVAL = ACTIVE_INTERVAL = 0.25
#: the wait while something needs a closer look: tasks held in the window with nothing
#: running, a death or an OOM kill waiting for the kernel's line
BLOCKED_WAIT = 0.02


class Scheduler:
    """Takes tasks from the store, admits them by memory, runs them on an executor; the
    :attr:`recorder` records how every attempt ended."""

    def __init__(self, config: RunnerConfig, endings: Endings | None = None) -> None:
        self.config = config
        #: the tasks of watched jobs, told as their ends are committed
        self.endings = endings if endings is not None else Endings()
        self.id = uuid.uuid4().hex
        self.store = open_store(config.store)
        self.writes = PendingWrites()
        self.window = Window(
            self.store, config.window, config.batch_size, owner=self.id, claim=config.replica
        )
        #: what :meth:`start` built (scheduler/compose.py); None before it
        self.parts: Parts | None = None
        #: the dashboard's time series, written on its own thread (scheduler/samples.py)
        self.sampler = Sampler(str(config.store))
        self.started = False
        #: found taken over by another replica (its lease expired): it records nothing
        #: more, and stopping hands nothing back (none of it is its own any more)
        self.taken_over = False
        self._view = SchedulerView()
        self._view_at = 0.0
        self._active: list[str] = []
        self._active_at = 0.0
        self._heartbeat_at = 0.0
        #: the lease thread, once started
        self.lease: LeaseKeeper | None = None
        self._takeovers_seen = 0
        self._parts_at = 0.0
        self._parts_swept = False
        self._cancel_check_at = 0.0
        #: the window or the running attempts held something at the last refill
        self._had_work = False
        self._tasks_added = False  # another thread added tasks: look for new jobs now
        #: the longest a step waits for an outcome (outcomes, new tasks, wake-ups and stops
        #: end it at once): the poll for tasks other processes add (config ``idle_wait``)
        self.idle_wait = config.idle_wait
        #: wake-ups from the store when other processes make tasks ready (a PostgreSQL
        #: listener; nothing on SQLite), from start() to stop()
        self.wakeups: Wakeups | None = None
        #: jobs whose parts a waiter asked for (from other threads: a deque is thread-safe)
        self._parts_asked: deque[str] = deque()
        #: waiters of other threads (Job.wait) wake when a job finishes or the loop stops
        self.announcements = Announcements()

    # -- the parts, once started --------------------------------------------------------

    @property
    def executor(self) -> Executor | None:
        return self.parts.executor if self.parts is not None else None

    @property
    def budget(self) -> int:
        return self.parts.budget if self.parts is not None else 0

    @property
    def isolation(self) -> IsolationPlan | None:
        return self.parts.isolation if self.parts is not None else None

    @property
    def admission(self) -> Admission:
        assert self.parts is not None, "start() first"
        return self.parts.admission

    @property
    def estimates(self) -> Estimates:
        assert self.parts is not None, "start() first"
        return self.parts.estimates

    @property
    def recorder(self) -> AttemptRecorder:
        assert self.parts is not None, "start() first"
        return self.parts.recorder

    # -- start and stop ---------------------------------------------------------------

    def start(self) -> None:
        # The lease is kept on a thread of its own (scheduler/lease.py), from before the
        # scheduler registers (in assemble), so that however long the rest of the start
        # takes, its heartbeats come within the lease.
        self.lease = LeaseKeeper(self.config, self.id, self.wake)
        self.lease.start()
        parts = self.parts = assemble(
            self.config,
            scheduler_id=self.id,
            store=self.store,
            writes=self.writes,
            window=self.window,
            endings=self.endings,
        )
        # Tasks another replica or process makes ready wake the loop as local ones do.
        self.wakeups = self.store.listen(self.tasks_added)
        self.sampler.start()
        # The sampler's thread checkpoints the WAL after each of its writes (about once a
        # second): the loop's commits no longer stall on a checkpoint's fsyncs.
        self.store.defer_checkpoints()
        self.started = True
        self._publish_view(force=True)
        log.info(
            "scheduler %s: isolation %s (%s); budget %s; %d workers",
            self.id[:8],
            parts.isolation.mode,
            parts.isolation.reason,
            format_size(parts.budget),
            self.config.workers,
        )

    def stop(self) -> None:
        """Stop: running attempts end ``interrupted`` and their tasks (and the window's)
        go back to ready; the last Parquet parts are written; workers and their cgroups,
        the kernel-log and part threads, and the store are closed."""
        self.announcements.announce()
        try:
            if self.started and not self.taken_over:
                self._stop_attempts()
                if self.parts is not None and self.parts.notifier is not None:
                    self._refresh_active(force=True)  # tell the jobs that just finished
        finally:
            parts = self.parts
            if parts is not None:
                parts.executor.stop()
                parts.kmsg.stop()
                parts.sink.stop()
            self.sampler.stop()
            if self.wakeups is not None:
                self.wakeups.close()
                self.wakeups = None
            if self.lease is not None:
                self.lease.stop()
            if parts is not None and parts.notifier is not None:
                parts.notifier.close(NOTIFY_DRAIN_TIMEOUT)  # after the workers: they go first
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
        self.store.leases.requeue_tasks(
            [r.task.id for r in running] + [t.id for t in self.window], self.id
        )
        self._write_parts(final=True)
        self.store.leases.unregister(self.id)

    # -- the loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event, until_idle: bool = False) -> None:
        """Run until ``stop`` is set, or nothing is left to do."""
        try:
            while not stop.is_set():
                self.step()
                if until_idle and self.idle():
                    self.flush()
                    self._write_parts(final=True)
                    return
        except TakenOverError as err:
            # Another replica found this one dead and took its attempts and tasks over:
            # stop at once (stop() kills the workers, records and hands back nothing).
            self.taken_over = True
            log.error("scheduler %s: %s; stopping", self.id[:8], err)
            raise

    def idle(self) -> bool:
        recorder = self.recorder
        if self.window or recorder.running or recorder.deaths or self.writes:
            return False
        self._refresh_active(force=True)
        return not self._active

    def step(self, timeout: float | None = None) -> None:
        """One pass: take tasks, dispatch, wait up to ``timeout`` for outcomes (less when
        something is due sooner: :meth:`_wait`), record them, and the periodic work."""
        parts = self.parts
        assert parts is not None, "start() first"
        recorder = parts.recorder
        now = time.time()
        self._refill(now)
        parts.dispatcher.dispatch(now, self.flush)
        most = self.idle_wait if timeout is None else timeout
        for event in parts.executor.poll(self._wait(now, most)):
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
        self._lease_news(now)
        if now - self._cancel_check_at >= 1.0:
            self._cancel_check_at = now
            self._check_cancelled()
        if now - self._parts_at >= self.config.part_interval:
            self._write_parts(final=False)
            self._parts_at = now
        # A sample is taken from the view: a fresh one when a sample is due.
        self._publish_view(force=self.sampler.due())
        self.sampler.tick(self._view)

    def _lease_news(self, now: float) -> None:
        """What the lease thread found: this scheduler taken over (raised: it stops), or
        dead replicas taken over (their tasks are ready: look now). A replica also learns,
        every heartbeat interval, the memory estimates the others taught."""
        lease = self.lease
        if lease is None:
            return
        if lease.taken_over is not None:
            raise lease.taken_over
        if lease.takeovers != self._takeovers_seen:
            self._takeovers_seen = lease.takeovers
            self._tasks_added = True
        if self.config.replica and now - self._heartbeat_at >= heartbeat_every(self.config):
            self._heartbeat_at = now
            self.estimates.learn_shared(self.store.estimate_rows())

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
        self.window.size = max(1, size)

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
        return None if self.parts is None else self.parts.sink.errors.get(job_id)

    def _publish_view(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._view_at < VIEW_INTERVAL:
            return
        self._view_at = now
        parts = self.parts
        assert parts is not None
        executor, isolation = parts.executor, parts.isolation
        self._view = SchedulerView(
            started=self.started,
            budget=parts.budget,
            admitted=parts.admission.total,
            running=len(parts.recorder.running),
            window=len(self.window),
            isolation=isolation.mode,
            isolation_reason=isolation.reason,
            warnings=tuple(isolation.warnings),
            lost_attempts_recovered=parts.recovery.lost_attempts,
            workers=executor.worker_pids(),
            worker_isolation=executor.worker_isolation(),
            recycles=dict(executor.recycles),
            leftovers=dict(executor.leftovers),
            duplicates=parts.recorder.stats.duplicates,
            active_jobs=tuple(self._active),
            in_flight=_in_flight(self.recorder.running.values()),
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
                self._publish_view(force=True)
                self.sampler.finished(self._view, finished)
                self.announcements.announce()
            # A job that finished by any path (its last outcome a failure, cancelled,
            # lost) has its last parts due now, not only when a result arrives.
            self.recorder.parts_due.update(finished)
            self.window.forget(finished)
            notifier = self.parts.notifier if self.parts is not None else None
            if notifier is not None:
                for notice in job_notices(self.store, before, self._active):
                    if self.config.replica and not self.store.leases.claim_job_notice(
                        notice.job_id, notice.state
                    ):
                        continue  # another replica told it
                    notifier.notify(notice)

    def _refill(self, now: float) -> None:
        added = self._tasks_added
        if not self.window.due(now, added):
            return
        self._tasks_added = False
        # New tasks may be a new job; the last task in hand ending, a finished job (its
        # waiters hear it now, once, not at every idle step).
        in_hand = bool(self.window or self.recorder.running)
        self._refresh_active(force=added or (self._had_work and not in_hand))
        self._had_work = in_hand
        if not self.window.claim:
            # The window reads ready tasks without claiming them: what left it (begun,
            # refused) must no longer read as ready.
            self.flush()
        self.window.refill(now, self._active)

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
            self.recorder.stats.duplicates += self.store.apply(writes, dirty, self.id)
            dirty = []
        except TakenOverError:
            # Fenced: another replica took this one's attempts over; what they did is
            # dropped (counted in the store: fenced_writes), never recorded over theirs.
            log.error(
                "scheduler %s was taken over: %d writes of its attempts dropped (fenced)",
                self.id[:8],
                len(writes),
            )
            raise
        except StoreUnavailable:
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
        # Only what the store now holds is told (Sentry, webhooks, JSON logs, watchers).
        self.endings.release(self.recorder.notices.unrecorded)
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
                self.executor.kill(run, KillReason.TIMEOUT, {"timeout_s": run.task.timeout})

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
        self.window.drop(cancelled)
        for task_id in cancelled:
            self.admission.forget(task_id)
        for run in list(running.values()):
            if run.task.id in cancelled:
                run.cancelled = True
                self.executor.kill(run, KillReason.CANCEL, {})

    # -- results ----------------------------------------------------------------------

    def _write_parts(self, final: bool) -> None:
        """Have the Parquet parts that are due written: on the sink's thread as the job
        runs; at ``final`` (stopping, or idle) here, after the sink has caught up."""
        self.flush()
        sink = self.parts.sink if self.parts is not None else None
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


def _in_flight(running: Iterable[Running]) -> dict[str, tuple[int, int]]:
    """job id -> (attempts in flight, bytes admitted to them)."""
    jobs: dict[str, tuple[int, int]] = {}
    for run in running:
        n, total = jobs.get(run.task.job_id, (0, 0))
        jobs[run.task.job_id] = (n + 1, total + run.limit)
    return jobs
