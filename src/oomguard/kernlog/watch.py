"""A background reader of the kernel log that keeps the OOM kills it sees.

Started with the scheduler, it reads ``/dev/kmsg`` from the position at start-up (never
``/proc/kmsg``, which consumes records) and indexes each OOM event by victim pid and by
the memory cgroup it names, so the classifier can attach the kernel's own lines to an
attempt. Where the log cannot be read, :attr:`KernelLogWatch.unavailable` says why.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from oomguard.errors import KernelLogUnavailable

if TYPE_CHECKING:
    from oomguard.kernlog.event import OomEvent
    from oomguard.kernlog.sources import KernelLogFollower


#: how often a plain file standing in for the kernel's device is read (seconds)
POLL_INTERVAL = 0.05


class KernelLogWatch:
    def __init__(self, path: str = "/dev/kmsg", keep: int = 2000) -> None:
        self.path = path
        self.unavailable: str | None = None
        self._events: deque[tuple[float, OomEvent]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._follower: KernelLogFollower | None = None
        #: written by stop() to wake the reader from its select
        self._wake: tuple[int, int] = (-1, -1)

    def start(self) -> None:
        from oomguard.kernlog.parser import OomLogParser
        from oomguard.kernlog.sources import KernelLogFollower

        self._follower = KernelLogFollower(self.path)
        try:
            self._follower.open(from_start=False)
        except KernelLogUnavailable as err:
            self.unavailable = str(err)
            return
        except OSError as err:
            self.unavailable = f"cannot read {self.path}: {err}"
            return
        self._parser = OomLogParser()
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._run, name="oomguard-kmsg", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        follower = self._follower
        fd = follower.fileno if follower is not None and follower.is_device else None
        while not self._stop.is_set():
            if fd is not None:
                # Asleep until the kernel logs a record or stop() writes to the wake pipe:
                # an idle log never takes the interpreter from the scheduler's loop.
                try:
                    select.select([fd, self._wake[0]], [], [])
                except (OSError, ValueError):
                    self._stop.wait(POLL_INTERVAL)
            else:
                # A plain file or pipe standing in for the device is always readable.
                self._stop.wait(POLL_INTERVAL)
            self._drain()

    def _drain(self) -> None:
        if self._follower is None:
            return
        try:
            lines = self._follower.read_new()
        except Exception as err:  # a broken reader must not take the scheduler down
            self.unavailable = f"kernel log reader failed: {err}"
            self._stop.set()
            return
        if not lines:
            return
        now = time.time()
        with self._lock:
            for line in lines:
                for event in self._parser.feed(line):
                    self._events.append((now, event))

    def find(self, pid: int | None = None, cgroup: str | None = None) -> OomEvent | None:
        """The newest OOM event whose victim is ``pid`` or whose task memcg is ``cgroup``."""
        if self._thread is None:
            return None
        with self._lock:
            candidates = [e for _, e in self._events]
            # Events not handed out yet: the parser holds one until the next report starts.
            candidates.extend(self._parser.pending())
        for event in reversed(candidates):
            if pid is not None and event.victim_pid == pid:
                return event
            if cgroup and event.task_memcg and _same_cgroup(event.task_memcg, cgroup):
                return event
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")
            self._thread.join(timeout=2)
            for fd in self._wake:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self._follower is not None:
            with contextlib.suppress(OSError):
                self._follower.close()


def _same_cgroup(kernel_path: str, our_path: str) -> bool:
    # The kernel prints the path relative to the hierarchy root; ours is a filesystem path.
    kernel_path = kernel_path.rstrip("/")
    return bool(kernel_path) and our_path.rstrip("/").endswith(kernel_path)
