"""Leftover processes: whatever an attempt started and left running dies with the attempt.

A task may leave processes behind: a command that double-forks a ``setsid`` daemon, a
Python task that starts a subprocess and never waits for it. Left alone they are charged
to every later attempt of the worker, keep its cgroup from being removed and outlive the
server. After every attempt the worker sweeps (docs/ARCHITECTURE.md, "Leftover
processes"):

- **with a cgroup**, every process listed in the worker cgroup's ``cgroup.procs`` other
  than the worker is killed: one ``pread`` of a file kept open, no process scan;
- **without one** (watchdog mode), each child of the worker still there after the attempt
  is killed (found in ``/proc/self/task/*/children``, the worker's own threads only).

Either way the worker is a child subreaper (``PR_SET_CHILD_SUBREAPER``): orphans of its
descendants, daemons included, become its children, so it finds them without a cgroup
and reaps what it killed (a zombie left to init still answers ``kill -0``).

Killed processes are reaped; :meth:`Leftovers.sweep` says how many there were, which the
worker records in the attempt's evidence (``left_processes``). What survives a worker's
death in watchdog mode (no subreaper left) carries the worker's mark in its environment
(:data:`MARK_ENV`): the pool finds it with :func:`kill_marked`, a scan of ``/proc`` it
makes only when a worker dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Collection
from pathlib import Path

from oomguard.jobs.command import MARK_ENV
from oomguard.procfs import PROCFS_PATH, children, process_state

#: prctl option that makes the caller a child subreaper
PR_SET_CHILD_SUBREAPER = 36
#: seconds a sweep waits for killed processes to exit (a process in D state takes a while)
SWEEP_WAIT = 2.0
_READ = 65536


def become_subreaper() -> bool:
    """Make this process a child subreaper; ``False`` if the kernel refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def reap_children() -> None:
    """Reap every child of this process that has exited (never blocks)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _reap_killed(killed: set[int], deadline: float) -> None:
    """Wait (until ``deadline``) for the killed processes that are this one's children:
    one leaves its cgroup before it becomes a zombie to reap."""
    waiting = set(killed)
    while waiting:
        for pid in list(waiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours (reaped by its own parent), or reaped
                done = pid
            if done:
                waiting.discard(pid)
        if not waiting or time.monotonic() > deadline:
            return
        time.sleep(0.001)


def _pids(text: str) -> list[int]:
    return [int(word) for word in text.split() if word.isdigit()]


class Leftovers:
    """The worker's sweep of what an attempt left running (see the module docstring)."""

    def __init__(self, cgroup: str | None, proc_root: Path = PROCFS_PATH) -> None:
        self._me = os.getpid()
        self._proc_root = proc_root
        self._procs_path = os.path.join(cgroup, "cgroup.procs") if cgroup else None
        self._procs_fd: int | None = None
        if self._procs_path is not None:
            # Kept open: the sweep after each attempt is one pread.
            self._procs_fd = os.open(self._procs_path, os.O_RDONLY | os.O_CLOEXEC)
        # Without one: the main thread's children file, kept open, read when the worker
        # has no other thread (a thread a task started may have children of its own).
        self._tasks = os.path.join(proc_root, str(self._me), "task")
        self._main_children: int | None = None
        if self._procs_fd is None:
            try:
                self._main_children = os.open(
                    os.path.join(self._tasks, str(self._me), "children"),
                    os.O_RDONLY | os.O_CLOEXEC,
                )
            except OSError:
                self._main_children = None
        # Orphans come to the worker: it finds them without a cgroup, and reaps what it
        # killed itself (init may take its time, and a zombie still answers kill -0).
        become_subreaper()

    def _listed(self) -> list[int]:
        """The processes to sweep: in the cgroup, or the children (without one)."""
        if self._procs_fd is not None:
            data = os.pread(self._procs_fd, _READ, 0)
            if len(data) == _READ and self._procs_path is not None:  # a long list
                data = Path(self._procs_path).read_bytes()
            return [pid for pid in _pids(data.decode("ascii", "replace")) if pid != self._me]
        if self._main_children is not None:
            try:
                alone = os.listdir(self._tasks) == [str(self._me)]
                data = os.pread(self._main_children, _READ, 0) if alone else b""
            except OSError:
                alone = False
            if alone and len(data) < _READ:
                return _pids(data.decode("ascii", "replace"))
        return children(self._me, self._proc_root)

    def reap(self) -> None:
        """Reap the worker's children that exited (zombies); never blocks."""
        reap_children()

    def _gone(self, pid: int) -> bool:
        state = process_state(pid, self._proc_root)
        return state is None or state in ("Z", "X")

    def sweep(self) -> int:
        """Kill and reap what the last attempt left; the number of processes killed.

        An attempt that left nothing (almost every one) costs one read: the list itself
        (with a cgroup, one ``pread``). Children that exited by themselves are not in it
        with a cgroup; they are reaped by :meth:`reap`, once a batch, or by the next sweep
        that finds something.

        Killing a process in the middle of a tree hands its children to the worker (a
        subreaper) or leaves them in the cgroup: the next round gets them, until nothing
        is left or :data:`SWEEP_WAIT` seconds passed.
        """
        if not self._listed():
            return 0
        reap_children()
        killed: set[int] = set()
        deadline = 0.0
        delay = 0.001
        while True:
            listed = [pid for pid in self._listed() if pid not in killed or not self._gone(pid)]
            fresh = [pid for pid in listed if pid not in killed]
            for pid in fresh:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.add(pid)
            reap_children()
            now = time.monotonic()
            if not deadline:
                deadline = now + SWEEP_WAIT
            if not listed or now > deadline:
                break
            if not fresh:  # only dying ones left: give the kernel a moment
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        _reap_killed(killed, deadline)
        return len(killed)


def kill_marked(marks: Collection[str], proc_root: Path = PROCFS_PATH) -> int:
    """SIGKILL every process whose environment carries ``MARK_ENV`` set to one of
    ``marks``; how many.

    For what a watchdog-mode worker left when it died (no cgroup holds it, no subreaper
    is left to collect it): one scan of ``proc_root``, made only then. A process that
    cleared its environment is not found; the worker's process group is killed as well.
    """
    needles = {f"{MARK_ENV}={mark}".encode() for mark in marks}
    if not needles:
        return 0
    killed = 0
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            environ = (proc_root / entry / "environ").read_bytes()
        except OSError:
            continue
        if needles.isdisjoint(environ.split(b"\0")):
            continue
        try:
            os.kill(int(entry), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed += 1
    return killed


__all__ = ["MARK_ENV", "Leftovers", "become_subreaper", "kill_marked", "reap_children"]
