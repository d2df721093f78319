"""oomguard's worker pool inside a Dask worker: every attempt in a child process of its own
memory cgroup on the worker host.

The worker plugin (:class:`~.worker_plugin.WorkerEvidencePlugin`) starts a
:class:`HostPool` in each Dask worker process. The pool is the local executor's
:class:`~oomguard.worker.pool.WorkerPool`: child processes (``oomguard.worker.child``),
each in its own memory cgroup below the Dask worker's own cgroup (found as oomguard finds
its own, ``cgroups/locate.py``), with a raised ``oom_score_adj``; under the RSS watchdog
where no cgroup can be made. Each group of attempts runs in one child under the limit
admission gave it, so a task that outgrows its limit is killed alone by the kernel: the
Dask worker, its other tasks and the results it holds survive. The death is classified
here, on the host, with the cgroup's counters and the kernel's ``Killed process`` line
from this host (:func:`~oomguard.diagnosis.classify.explain_death`), and sent back as the
attempt's failed outcome; the attempts of the group it never began are handed back
unstarted.

Modes (:attr:`HostPool.mode`): ``cgroup-v1``/``cgroup-v2``, ``watchdog``, or ``thread``
(asked for, or nothing could be started here: attempts run in the Dask worker's own thread,
as before, and a task that outgrows the worker takes the worker down). See
docs/ARCHITECTURE.md ("Dask").
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from oomguard.cgroups.detect import detect_isolation
from oomguard.diagnosis.classify import explain_death
from oomguard.errors import OomguardError
from oomguard.executors.dask.remote import THREAD, log
from oomguard.executors.dask.remote.answers import Evidence, Outcome
from oomguard.jobs.model import KillReason
from oomguard.kernlog.watch import KernelLogWatch
from oomguard.worker.calls import CallItem
from oomguard.worker.messages import Idle, Refused
from oomguard.worker.messages import Outcome as WorkerOutcome
from oomguard.worker.pool import Died, PoolConfig, Worker, WorkerPool


class ChildUnavailable(OomguardError):
    """No child could be had for a group (none could be started, or given its limit)."""


#: what the children do not inherit from the Dask worker: the nanny's
#: ``MALLOC_TRIM_THRESHOLD_`` (65536 by default, ``distributed.nanny.pre-spawn-environ``)
#: turns off glibc's adaptive mmap threshold, so every buffer over 128 KiB (each result,
#: each pickled copy of it) is a fresh mmap, page-faulted in and unmapped again. A child
#: gives its heap back when it needs to, as a local worker does (worker/hygiene.py).
CHILD_ENV_DROP = ("MALLOC_TRIM_THRESHOLD_",)

#: attempts remembered as killed before a child had them (the oldest forgotten first)
DOOMED_KEPT = 10_000

#: how often a waiting thread wakes up to sample its child (watchdog mode)
WATCH_INTERVAL_S = 0.1


class HostPool:
    """The children running attempts for one Dask worker process (one per busy thread).

    Thread-safe: each Dask thread takes an idle child (or starts one), runs its group
    there, waits for that child only, and gives it back. Children are started from one
    long-lived thread of the pool's own, because a child dies with the thread that
    started it (``PR_SET_PDEATHSIG``), and Dask's threads may come and go.
    """

    def __init__(
        self,
        *,
        asked: str = "auto",
        oom_score_adj: int = 800,
        recycle_growth_fraction: float = 0.25,
        max_tasks: int = 0,
        memory_limit: int | None = None,
        kernel_log: str | None = None,
        kernel_log_wait: float = 2.0,
        task_dir: str = "",
    ) -> None:
        self.asked = asked
        self.oom_score_adj = oom_score_adj
        self.recycle_growth_fraction = recycle_growth_fraction
        self.max_tasks = max_tasks
        self.memory_limit = memory_limit
        self.kernel_log = kernel_log
        self.kmsg: KernelLogWatch | None = None
        self.kernel_log_wait = kernel_log_wait
        self.task_dir = task_dir
        self.mode = THREAD
        self.reason = "not started"
        self.pool: WorkerPool | None = None
        #: children recycled here, by reason (each run's new ones go back in its answer)
        self.recycles: dict[str, int] = {}
        self._idle: list[Worker] = []
        self._busy: dict[str, Worker] = {}
        self._lock = threading.Lock()
        #: attempts killed before a child had them (their Dask task may already be running
        #: in a thread here, on its way to a child): they are never started
        self._doomed: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._spawner: ThreadPoolExecutor | None = None

    @property
    def settings(self) -> tuple[object, ...]:
        """What the pool was built with: a pool is reused only for the same settings."""
        return (
            self.asked,
            self.oom_score_adj,
            self.recycle_growth_fraction,
            self.max_tasks,
            self.memory_limit,
            self.kernel_log,
            self.kernel_log_wait,
            self.task_dir,
        )

    @property
    def isolated(self) -> bool:
        """Whether attempts run in children (not in the Dask worker's thread)."""
        return self.pool is not None

    def start(self) -> None:
        """Detect the isolation this host allows, start one child to check it works, and
        say the mode in the worker's log. Anything that fails leaves ``thread`` mode with
        the reason."""
        if self.asked == THREAD:
            self.reason = "thread mode was asked for (--dask-isolation thread)"
            self._say()
            return
        if self.kernel_log:
            self.kmsg = KernelLogWatch(self.kernel_log)
            self.kmsg.start()  # unreadable: said in each death's evidence
        try:
            plan = detect_isolation(self.asked)
            self.pool = WorkerPool(
                PoolConfig(
                    workers=0,
                    isolation=plan,
                    oom_score_adj=self.oom_score_adj,
                    max_tasks_per_worker=self.max_tasks,
                    recycle_growth_fraction=self.recycle_growth_fraction,
                    worker_memory=self.memory_limit,
                    task_dir=self.task_dir,
                    env_drop=CHILD_ENV_DROP,
                )
            )
            self._spawner = ThreadPoolExecutor(1, thread_name_prefix="oomguard-spawn")
            self._idle.append(self._spawn())
        except Exception as err:  # no cgroup where one was asked for, no child started
            self.close()
            self.mode, self.reason = THREAD, f"{type(err).__name__}: {err}"
            self._say()
            return
        self.mode, self.reason = plan.mode, plan.reason
        self._say()

    def _say(self) -> None:
        log.info(
            "oomguard: attempts run in %s mode on this Dask worker (pid %d): %s",
            self.mode,
            os.getpid(),
            self.reason,
        )

    def describe(self) -> dict[str, object]:
        """Mode, reason and children, for ``doctor`` and the executor."""
        with self._lock:
            children = len(self._idle) + len(self._busy)
        return {
            "mode": self.mode,
            "reason": self.reason,
            "pid": os.getpid(),
            "children": children,
            "recycles": dict(self.recycles),
        }

    def room(self, fraction: float, starting: int = 0) -> int:
        """Bytes of this Dask worker's memory no running attempt (nor one ``starting``
        with that limit) was given, at most ``fraction`` of it (0: its limit unknown)."""
        if not self.memory_limit:
            return 0
        with self._lock:
            given = starting + sum(c.limit_bytes or 0 for c in self._busy.values())
        return max(0, min(int(fraction * self.memory_limit), self.memory_limit - given))

    # -- children ---------------------------------------------------------------------

    def _spawn(self) -> Worker:
        assert self.pool is not None and self._spawner is not None
        return self._spawner.submit(self.pool.spawn).result()

    def _acquire(self, limit: int | None) -> Worker:
        assert self.pool is not None
        with self._lock:
            child = self._idle.pop() if self._idle else None
        if child is None:
            child = self._spawn()
        try:
            self.pool.set_limit(child, limit)
        except OomguardError:
            # Its memory is above the new limit (v1 refuses): a fresh child instead.
            self._retire(child, "limit_change")
            child = self._spawn()
            self.pool.set_limit(child, limit)
        with self._lock:
            self._busy[child.name] = child
        return child

    def _release(self, child: Worker) -> None:
        with self._lock:
            self._busy.pop(child.name, None)
            if not child.dead:
                self._idle.append(child)

    def _retire(self, child: Worker, reason: str) -> None:
        assert self.pool is not None
        with self._lock:
            self._busy.pop(child.name, None)
            self.recycles[reason] = self.recycles.get(reason, 0) + 1
        self.pool.retire(child, reason)

    # -- running ----------------------------------------------------------------------

    def run(
        self, items: list[CallItem], limit: int | None, note: Callable[[int], None] | None = None
    ) -> list[Outcome]:
        """Run a group of call items in one child under ``limit`` bytes (None: the Dask
        worker's memory limit). One outcome per attempt: reported by the child, the
        death's class for the attempt its child died running, ``requeue`` for those after
        it. ``note(n)`` is called with the number of outcomes in so far.
        :class:`ChildUnavailable` (nothing ran) when no child can be had."""
        pool = self.pool
        if pool is None:
            raise ChildUnavailable("the pool is closed")
        doomed = self._take_doomed(items)
        if doomed:  # killed already (its outcome was told): never started
            items = [i for i in items if i.attempt_id not in doomed]
            if not items:
                return [Outcome.requeued(a) for a in doomed]
        try:
            child = self._acquire(limit or self.memory_limit)
        except Exception as err:  # EMFILE, ENOMEM, never ready, a cgroup refused
            raise ChildUnavailable(f"no child for this group: {type(err).__name__}: {err}") from err
        outcomes = [Outcome.requeued(a) for a in doomed]
        done = False
        try:
            pool.send(child, items, clean=bool(items and items[0].clean))
            if self._take_doomed(items):
                pool.kill(child, KillReason.CANCEL)  # killed between the check above and the send
            recycle: str | None = None
            while child.busy:
                tick = WATCH_INTERVAL_S if pool.watchdog else 1.0
                messages, died = pool.poll_worker(child, tick)
                for msg in messages:
                    if isinstance(msg, WorkerOutcome):
                        outcomes.append(self._outcome(msg, child.pid))
                        if note is not None:
                            note(len(outcomes))
                    elif isinstance(msg, Refused):
                        # It could not lower its limit: nothing ran, the group goes back.
                        outcomes.extend(Outcome.requeued(a) for a in msg.attempt_ids)
                    elif isinstance(msg, Idle):
                        recycle = msg.recycle
                if died is not None:
                    outcomes.extend(self._death(pool, died))
                    done = True
                    return outcomes
                if pool.watchdog and child.busy:
                    pool.watch(child, WATCH_INTERVAL_S)
            if recycle:
                self._retire(child, recycle)
            done = True
            return outcomes
        finally:
            if done:
                self._release(child)
            else:  # interrupted (a bug, a signal): the child is in an unknown state
                pool.kill(child, KillReason.STOP)
                with contextlib.suppress(Exception):
                    self._retire(child, "error")

    def _outcome(self, msg: WorkerOutcome, pid: int) -> Outcome:
        """The child's outcome message (``worker/messages.py``) as the answer's outcome:
        the one place the Dask side reads a worker message."""
        fc = msg.failure_class.value if msg.failure_class is not None else None
        evidence = dict(msg.evidence, isolation=self.mode)
        return Outcome(
            msg.attempt_id, msg.ok, msg.payload, fc, msg.message, evidence, msg.peak_bytes, pid
        )

    def _death(self, pool: WorkerPool, died: Died) -> list[Outcome]:
        """Classify a child's death here, with this host's counters and kernel log."""
        child = died.worker
        counters_after = None
        if child.cgroup is not None:
            with contextlib.suppress(OSError):
                counters_after = child.cgroup.counters()  # before its cgroup goes
        deadline = time.monotonic() + self.kernel_log_wait
        while True:
            explained = explain_death(
                died, counters_after, self.kmsg, waited_enough=time.monotonic() >= deadline
            )
            if explained is not None:
                break
            time.sleep(0.05)  # the kernel's "Killed process" line can lag the signal
        pool.release_cgroup(child)
        with self._lock:
            self._busy.pop(child.name, None)
        if not died.inflight:
            return []
        fc, evidence, peak = explained
        evidence.update(isolation=self.mode, worker_memory_limit=self.memory_limit)
        first, *rest = died.inflight
        dead = Outcome(first, False, None, fc.value, None, evidence, peak, child.pid)
        return [dead, *(Outcome.requeued(a) for a in rest)]

    def kill(self, attempt_id: int, reason: str, evidence: Evidence) -> str:
        """Kill the child running ``attempt_id`` (a timeout, a cancel): ``killed``;
        ``absent`` when no child here runs it; ``thread`` when nothing can be killed."""
        if self.pool is None:
            return THREAD
        with self._lock:
            busy = list(self._busy.values())
        # A child's inflight changes under its own thread: a copy is read.
        child = next((c for c in busy if attempt_id in tuple(c.inflight)), None)
        if child is None:
            # Not in a child (yet): should its group reach run(), it is left out there
            # (a cancelled Dask task already running in a thread runs on to its end).
            with self._lock:
                self._doomed[attempt_id] = None
                while len(self._doomed) > DOOMED_KEPT:
                    self._doomed.popitem(last=False)
            return "absent"
        self.pool.kill(child, KillReason(reason), evidence)
        return "killed"

    def _take_doomed(self, items: list[CallItem]) -> set[int]:
        """The attempts of ``items`` killed before a child had them (forgotten here)."""
        with self._lock:
            if not self._doomed:
                return set()
            doomed = {i.attempt_id for i in items if i.attempt_id in self._doomed}
            for attempt_id in doomed:
                del self._doomed[attempt_id]
        return doomed

    def close(self) -> None:
        """Kill the children and remove every cgroup this pool made."""
        if self.kmsg is not None:
            self.kmsg.stop()
            self.kmsg = None
        pool, self.pool = self.pool, None
        with self._lock:
            self._idle.clear()
            self._busy.clear()
        try:
            if pool is not None:
                pool.stop()
        finally:
            if self._spawner is not None:
                self._spawner.shutdown(wait=False)
                self._spawner = None


__all__ = ["ChildUnavailable", "HostPool"]
