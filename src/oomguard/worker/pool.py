"""The local worker pool: long-lived worker processes fed over pipes.

The pool watches each child with ``os.wait4`` (keeping its exit status and rusage) and
one worker's death never stops the pool: :meth:`WorkerPool.poll` reports the death with
the attempts it had, and the scheduler replaces the worker. In watchdog mode the pool
samples each busy worker's RSS, its descendants included, every ``watchdog_interval``
seconds and kills the worker's process group at its limit.

Nothing a task starts outlives its attempt: the worker kills what an attempt left
(``worker/leftovers.py``), and the pool kills what is left in a worker's cgroup before it
removes it, whether the worker retired or died. A cgroup that still cannot be removed is
logged and counted (:attr:`WorkerPool.leftovers`, ``/metrics``), never raised into the
scheduler's loop.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import pickle
import resource
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

import psutil

from oomguard.errors import IsolationError
from oomguard.jobs.command import open_pidfd
from oomguard.jobs.model import KillReason
from oomguard.procfs import tree_rss
from oomguard.worker.frames import FrameReader
from oomguard.worker.leftovers import MARK_ENV, kill_marked
from oomguard.worker.messages import Batch, Idle, Message, Outcome, Ready, Refused, decode

if TYPE_CHECKING:
    from oomguard.cgroups.cgroup import CgroupCounters, MemoryCgroup
    from oomguard.cgroups.detect import IsolationPlan
    from oomguard.cgroups.workers import CounterFiles, WorkerCgroups
    from oomguard.worker.calls import CallItem

log = logging.getLogger("oomguard.pool")

#: seconds a new worker has to report that it is ready (in its cgroup, oom_score_adj set)
READY_TIMEOUT = 60.0


#: where a worker starts: never the caller's directory (see :func:`worker_command`)
WORKER_CWD = "/"


def worker_command() -> list[str]:
    """How a worker process is started: isolated from the caller's directory.

    ``python -m`` puts the current directory first on ``sys.path``, so a planted
    ``oomguard/`` there would run in every worker (as root, under ``serve``). A worker
    starts in :data:`WORKER_CWD` with ``-P`` (Python >= 3.11: no such first entry at all),
    and moves to its ``task_dir`` only once oomguard is imported; ``task_dir`` is then
    searched after everything installed. Not ``-I``: that would also ignore
    ``PYTHONPATH``, through which users (and the tests) make task modules importable.
    """
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe_path, "-m", "oomguard.worker.child"]


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    pid: int
    start_time: float
    conn_in: Connection  # outcomes from the worker
    conn_out: Connection  # batches to the worker
    cgroup: MemoryCgroup | None = None
    limit_bytes: int | None = None
    baseline_rss: int = 0
    #: attempt ids sent and not yet reported, in the order the worker runs them
    inflight: deque[int] = field(default_factory=deque)
    busy: bool = False
    tasks_done: int = 0
    #: set when the pool killed it on purpose: why, and the evidence
    killed_by: tuple[KillReason, dict[str, object]] | None = None
    peak_sample: int = 0
    counters_before: CgroupCounters | None = None
    retire: str | None = None
    dead: bool = False
    #: reads its messages once it is ready (see worker/frames.py)
    reader: FrameReader | None = None
    #: its cgroup's limit is to come down to ``limit_bytes``: the worker lowers it itself
    #: with its next batch, after giving memory back (worker/hygiene.py)
    lower_pending: bool = False
    #: watchdog mode: the mark its descendants carry in their environment (MARK_ENV)
    mark: str | None = None
    #: a pidfd, readable once the worker exited (None where the kernel has none): its
    #: pipe may outlive it, held open by a process a task forked
    exit_fd: int | None = None
    #: its cgroup's counter files, kept open: read before every batch (``counters_before``)
    counter_files: CounterFiles | None = None


@dataclass
class Died:
    worker: Worker
    status: int
    rusage: resource.struct_rusage | None
    inflight: list[int]


@dataclass
class PoolConfig:
    workers: int
    isolation: IsolationPlan
    oom_score_adj: int = 800
    max_tasks_per_worker: int = 0
    recycle_growth_fraction: float = 0.25
    worker_memory: int | None = None
    watchdog_interval: float = 0.1
    #: the directory tasks run in and import modules from, after everything installed
    #: ("": none; see :func:`worker_command`)
    task_dir: str = ""
    #: environment variables the worker processes do not inherit
    env_drop: tuple[str, ...] = ()


class WorkerPool:
    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.workers: dict[str, Worker] = {}
        self._names = itertools.count(1)
        self._last_watchdog = 0.0
        self.cgroups: WorkerCgroups | None = None
        self.watchdog = config.isolation.mode == "watchdog"
        if not self.watchdog:
            from oomguard.cgroups.workers import WorkerCgroups

            self.cgroups = WorkerCgroups.create(config.isolation)
        self.recycles: dict[str, int] = {}
        #: what was cleaned up after workers, by kind: ``processes_killed`` (left by a
        #: dead watchdog-mode worker), ``cgroups_not_removed``
        self.leftovers: dict[str, int] = {}
        #: one poll object for every ready worker's pipe: fd -> worker
        self._poller = select.poll()
        self._fds: dict[int, Worker] = {}
        #: written by :meth:`wake` (another thread) to end a :meth:`poll` early
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller.register(self._wake_r, select.POLLIN)
        self._wake_lock = threading.Lock()  # a wake never writes to a closed (reused) fd
        #: each ready worker's pidfd: fd -> worker
        self._exits: dict[int, Worker] = {}

    @property
    def mode(self) -> str:
        return str(self.config.isolation.mode)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        for _ in range(self.config.workers):
            self.spawn()

    def spawn(self) -> Worker:
        name = f"w{next(self._names)}"
        limit = self.config.worker_memory
        cgroup = self.cgroups.new_worker(name, limit) if self.cgroups else None
        try:
            return self._start(name, limit, cgroup)
        except BaseException:
            # Not started (EMFILE, ENOMEM, never ready): its cgroup must not stay behind.
            if cgroup is not None:
                with contextlib.suppress(OSError):
                    cgroup.remove()
            raise

    def _env(self, mark: str | None) -> dict[str, str] | None:
        """The worker processes' environment: this one's, less ``env_drop`` (None: all),
        with the worker's ``mark`` (watchdog mode, see worker/leftovers.py)."""
        drop = self.config.env_drop
        if mark is None and (not drop or not any(name in os.environ for name in drop)):
            return None
        env = {name: value for name, value in os.environ.items() if name not in drop}
        if mark is not None:
            env[MARK_ENV] = mark
        return env

    def _start(self, name: str, limit: int | None, cgroup: MemoryCgroup | None) -> Worker:
        to_child_r, to_child_w = os.pipe()
        try:
            from_child_r, from_child_w = os.pipe()
        except BaseException:
            os.close(to_child_r)
            os.close(to_child_w)
            raise
        mark = f"{os.getpid()}-{name}-{secrets.token_hex(8)}" if cgroup is None else None
        growth = None
        if limit and self.config.recycle_growth_fraction > 0:
            growth = int(limit * self.config.recycle_growth_fraction)
        cfg = {
            "parent_pid": os.getpid(),
            "fd_in": to_child_r,
            "fd_out": from_child_w,
            "oom_score_adj": self.config.oom_score_adj,
            "cgroup": str(cgroup.path) if cgroup else None,
            "cgroup_version": cgroup.version if cgroup else None,
            "recycle_growth_bytes": growth,
            "max_tasks": self.config.max_tasks_per_worker,
            "task_dir": self.config.task_dir,
        }
        try:
            proc = subprocess.Popen(
                [*worker_command(), json.dumps(cfg)],
                cwd=WORKER_CWD,
                pass_fds=(to_child_r, from_child_w),
                close_fds=True,
                # Its own process group, so a kill reaches whatever the task started.
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                env=self._env(mark),
            )
        except BaseException:
            os.close(to_child_w)
            os.close(from_child_r)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        conn_in = Connection(from_child_r, writable=False)
        conn_out = Connection(to_child_w, readable=False)
        try:
            start_time = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            start_time = 0.0
        worker = Worker(name, proc, proc.pid, start_time, conn_in, conn_out, cgroup, limit)
        worker.mark = mark
        # Wait for "ready": the worker is in its cgroup with its oom_score_adj set.
        if not conn_in.poll(READY_TIMEOUT):
            self._kill(worker)
            self._reap(worker, block=True)
            self._close(worker)
            raise IsolationError(f"worker {name} did not start within {READY_TIMEOUT:.0f} s")
        try:
            ready = decode(conn_in.recv_bytes())
        except (EOFError, OSError) as err:
            self._reap(worker, block=True)
            self._close(worker)
            raise IsolationError(
                f"worker {name} died while starting (status {worker.proc.returncode}); "
                "run `oomguard doctor`"
            ) from err
        assert isinstance(ready, Ready), ready
        worker.baseline_rss = ready.baseline_rss
        if cgroup is not None:
            from oomguard.cgroups.workers import CounterFiles

            worker.counter_files = CounterFiles(cgroup)
        worker.reader = FrameReader(conn_in.fileno())
        self._poller.register(conn_in.fileno(), select.POLLIN)
        self._fds[conn_in.fileno()] = worker
        worker.exit_fd = open_pidfd(worker.pid)
        if worker.exit_fd is not None:
            self._poller.register(worker.exit_fd, select.POLLIN)
            self._exits[worker.exit_fd] = worker
        self.workers[name] = worker
        return worker

    def set_limit(self, worker: Worker, limit: int | None) -> None:
        """Set the kernel (or watchdog) limit the worker's next attempt runs under.

        A cgroup's limit that goes up is written now. One that comes down is lowered by
        the worker itself when it gets its next batch, after giving back memory that
        earlier attempts left (the kernel will not lower a limit below what the cgroup
        holds): if it still cannot, the batch is answered ``refused`` and nothing of it
        runs (:meth:`poll`)."""
        if worker.limit_bytes == limit:
            return
        if worker.cgroup is not None:
            lowering = limit is not None and (
                worker.limit_bytes is None or limit < worker.limit_bytes
            )
            if not lowering:
                worker.cgroup.set_limit(limit)
            worker.lower_pending = lowering
        worker.limit_bytes = limit

    def send(self, worker: Worker, items: list[CallItem], clean: bool = False) -> None:
        """Send ``items`` to run in order; ``clean``: the first must measure a clean peak
        (an attempt at the cap: worker/hygiene.py)."""
        if worker.counter_files is not None:
            worker.counters_before = worker.counter_files.counters()
        elif worker.cgroup is not None:
            worker.counters_before = worker.cgroup.counters()
        worker.inflight.extend(item.attempt_id for item in items)
        worker.busy = True
        worker.peak_sample = 0
        batch = Batch(items, worker.limit_bytes, worker.lower_pending, clean)
        worker.lower_pending = False
        # If it died, poll() reports the death with these attempts.
        with contextlib.suppress(OSError):
            worker.conn_out.send_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))

    def idle_workers(self) -> list[Worker]:
        return [w for w in self.workers.values() if not w.busy and not w.dead]

    def kill(
        self, worker: Worker, reason: KillReason, evidence: dict[str, object] | None = None
    ) -> None:
        if worker.killed_by is None:
            worker.killed_by = (reason, evidence or {})
        self._kill(worker)

    def _kill(self, worker: Worker) -> None:
        if worker.cgroup is not None:
            with contextlib.suppress(OSError):
                worker.cgroup.kill_all()
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)

    def _reap(
        self, worker: Worker, block: bool
    ) -> tuple[int, resource.struct_rusage | None] | None:
        try:
            pid, status, rusage = os.wait4(worker.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return (0, None)
        if pid == 0:
            return None
        # Tell Popen the child is gone so it does not try (or warn) later.
        worker.proc.returncode = os.waitstatus_to_exitcode(status)
        return status, rusage

    def _close(self, worker: Worker) -> None:
        worker.dead = True
        if worker.reader is not None and self._fds.get(worker.reader.fd) is worker:
            del self._fds[worker.reader.fd]
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._poller.unregister(worker.reader.fd)
        for conn in (worker.conn_in, worker.conn_out):
            with contextlib.suppress(OSError):
                conn.close()
        if worker.exit_fd is not None:
            self._exits.pop(worker.exit_fd, None)
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._poller.unregister(worker.exit_fd)
            with contextlib.suppress(OSError):
                os.close(worker.exit_fd)
            worker.exit_fd = None

    def retire(self, worker: Worker, reason: str) -> None:
        """Stop an idle worker (recycling) and count it by reason."""
        self.recycles[reason] = self.recycles.get(reason, 0) + 1
        with contextlib.suppress(OSError):
            worker.conn_out.send_bytes(pickle.dumps(None))
        # A worker exits quickly on None; wait briefly, then make sure.
        deadline = time.time() + 2.0
        result = None
        while result is None and time.time() < deadline:
            result = self._reap(worker, block=False)
            if result is None:
                time.sleep(0.002)
        if result is None:
            self._kill(worker)
            self._reap(worker, block=True)
            self._kill_marked([worker])
        self._close(worker)
        self._drop(worker)

    def _kill_marked(self, workers: list[Worker]) -> None:
        """Watchdog mode: kill what workers that did not sweep (killed, died) left."""
        marks = [w.mark for w in workers if w.mark is not None]
        if marks:
            n = kill_marked(marks)
            if n:
                self._count("processes_killed", n)
                names = ", ".join(w.name for w in workers)
                log.warning("worker(s) %s left %d process(es) behind: killed", names, n)

    def _count(self, kind: str, n: int = 1) -> None:
        self.leftovers[kind] = self.leftovers.get(kind, 0) + n

    def _drop(self, worker: Worker) -> None:
        """Forget a worker that exited; kill what is left in its cgroup, then remove it.

        A cgroup that cannot be removed (a process stuck in the kernel) is logged and
        counted, never raised: one task never stops the scheduler.
        """
        self.workers.pop(worker.name, None)
        if worker.counter_files is not None:
            worker.counter_files.close()
        if worker.cgroup is not None:
            try:
                worker.cgroup.kill_all()
                worker.cgroup.remove()
            except (OSError, IsolationError) as err:
                self._count("cgroups_not_removed")
                log.warning("worker %s: %s", worker.name, err)

    def wake(self) -> None:
        """End a :meth:`poll` that waits now (or the next one) at once; thread-safe."""
        with self._wake_lock, contextlib.suppress(OSError):  # full: a wake is pending
            if self._wake_w >= 0:
                os.write(self._wake_w, b"\0")

    def stop(self) -> None:
        for worker in list(self.workers.values()):
            self.kill(worker, KillReason.STOP)
        stopped = list(self.workers.values())
        for worker in stopped:
            self._reap(worker, block=True)
            self._close(worker)
        self._kill_marked(stopped)
        for worker in stopped:
            self._drop(worker)
        if self.cgroups is not None:
            try:
                self.cgroups.remove_all()
            except IsolationError as err:
                self._count("cgroups_not_removed")
                log.warning("worker cgroups: %s", err)
        with self._wake_lock:
            if self._wake_w >= 0:
                self._poller.unregister(self._wake_r)
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_w = -1

    # -- events -----------------------------------------------------------------------

    def poll(self, timeout: float) -> tuple[list[tuple[Worker, Message]], list[Died]]:
        """Wait up to ``timeout`` for messages; return them and the workers that died."""
        if self.watchdog and any(w.busy for w in self.workers.values()):
            timeout = min(timeout, self.config.watchdog_interval)
        ready = self._poller.poll(max(0.0, timeout) * 1000.0)
        messages: list[tuple[Worker, Message]] = []
        died: list[Died] = []
        for fd, _events in ready:
            if fd == self._wake_r:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
                continue
            worker = self._fds.get(fd)
            exited = worker is None
            if worker is None:
                worker = self._exits.get(fd)  # it exited: what it wrote, then its death
            if worker is None or worker.reader is None or worker.dead:
                continue
            while True:
                frames = worker.reader.read()
                for data in frames:
                    msg = _received(worker, decode(data))
                    messages.append((worker, msg))
                if not exited or not frames:
                    break
            if worker.reader.eof or exited:
                died.append(self._died(worker))
        if self.watchdog:
            self._watchdog()
        return messages, died

    def poll_worker(self, worker: Worker, timeout: float) -> tuple[list[Message], Died | None]:
        """Wait up to ``timeout`` for one worker's messages; return them and its death.

        For a caller that gives each worker to one thread of its own (the pool inside a
        Dask worker, ``executors/dask_isolation.py``): it touches no other worker.
        """
        messages: list[Message] = []
        reader = worker.reader
        if worker.dead or reader is None:
            return messages, None
        waiter = select.poll()
        waiter.register(reader.fd, select.POLLIN)
        if worker.exit_fd is not None:
            waiter.register(worker.exit_fd, select.POLLIN)
        ready = {fd for fd, _ in waiter.poll(max(0.0, timeout) * 1000.0)}
        if not ready:
            return messages, None
        exited = worker.exit_fd in ready
        while True:
            frames = reader.read()  # whole messages only (worker/frames.py)
            messages.extend(_received(worker, decode(data)) for data in frames)
            if not exited or not frames:
                break
        return messages, (self._died(worker) if reader.eof or exited else None)

    def _died(self, worker: Worker) -> Died:
        result = self._reap(worker, block=True)
        status, rusage = result if result else (0, None)
        self._close(worker)
        self._kill_marked([worker])
        inflight = list(worker.inflight)
        self.workers.pop(worker.name, None)
        return Died(worker, status, rusage, inflight)

    def release_cgroup(self, worker: Worker) -> None:
        """Remove a dead worker's cgroup, after its counters were read."""
        self._drop(worker)

    def _watchdog(self) -> None:
        now = time.monotonic()
        if now - self._last_watchdog < self.config.watchdog_interval:
            return
        self._last_watchdog = now
        for worker in list(self.workers.values()):
            if worker.busy and not worker.dead:
                self.watch(worker, self.config.watchdog_interval)

    def watch(self, worker: Worker, interval: float) -> None:
        """One watchdog sample of ``worker`` (sampled every ``interval`` seconds): its RSS,
        children included, raises its peak; over its limit, it is killed (``watchdog``)."""
        rss = tree_rss(worker.pid)
        worker.peak_sample = max(worker.peak_sample, rss)
        if worker.limit_bytes and rss > worker.limit_bytes:
            evidence = {"rss_bytes": rss, "limit_bytes": worker.limit_bytes}
            self.kill(worker, KillReason.WATCHDOG, dict(evidence, sampled_every_s=interval))

    def sample_peaks(self) -> None:
        """Sample busy workers' RSS (for peak memory where the cgroup cannot say)."""
        for worker in self.workers.values():
            if worker.busy and not worker.dead:
                worker.peak_sample = max(worker.peak_sample, tree_rss(worker.pid))


def _received(worker: Worker, msg: Message) -> Message:
    """Account for ``msg`` in ``worker``'s state: an outcome's attempt is no longer in
    flight, an idle worker is free; a refusal gets the batch's attempts (none of it ran:
    they are no longer in flight there)."""
    if isinstance(msg, Outcome):
        if worker.inflight and worker.inflight[0] == msg.attempt_id:
            worker.inflight.popleft()
        else:
            with contextlib.suppress(ValueError):
                worker.inflight.remove(msg.attempt_id)
    elif isinstance(msg, Idle):
        worker.busy = False
    elif isinstance(msg, Refused):
        msg = Refused(msg.message, tuple(worker.inflight))
        worker.inflight.clear()
    return msg
