"""The nanny plugin: how a Dask worker process died, told by the parent that outlives it.

:class:`NannyEvidencePlugin` runs in each nanny: it samples the worker's
``(pid, start_time)``, resident memory and cgroup counters, tails the kernel log where it
is readable, and when the worker process dies publishes a death record (exit code,
last/peak RSS, counters before and after, whether the nanny itself terminated it for its
memory limit, the kernel's OOM lines for the pid) as the scheduler event
:data:`~oomguard.executors.dask.remote.DEATH_TOPIC`, which the executor reads to classify
the death of the attempt that was running there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from distributed import Nanny
from distributed.diagnostics.plugin import NannyPlugin
from tornado.ioloop import PeriodicCallback

from oomguard import procfs
from oomguard.cgroups.cgroup import MemoryCgroup
from oomguard.cgroups.locate import locate_memory_cgroup
from oomguard.executors.dask.remote import DEATH_TOPIC, PLUGIN_NAME
from oomguard.executors.dask.remote.answers import CgroupReading, DeathRecord
from oomguard.executors.dask.remote.progress import read_progress
from oomguard.kernlog.watch import KernelLogWatch

SAMPLE_INTERVAL_S = 0.1
#: after a SIGKILL with no OOM line yet, how long to wait for the kernel's line
KERNEL_LOG_WAIT_S = 2.0


def _reading(pid: int) -> CgroupReading | None:
    """The memory cgroup counters of ``pid``'s cgroup, where they can be read."""
    try:
        version, directory, _, _ = locate_memory_cgroup(pid=pid)
    except (OSError, ValueError):
        return None
    if version is None or directory is None:
        return None
    return _reading_at(str(directory), version)


def _reading_at(path: str, version: int) -> CgroupReading | None:
    try:
        counters = MemoryCgroup(Path(path), version).counters()
    except (OSError, ValueError):
        return None
    return CgroupReading(path, version, counters)


class _Process(Protocol):
    """The worker process a nanny holds (``multiprocessing``'s, through distributed)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def exitcode(self) -> int | None: ...
    def is_alive(self) -> bool: ...


class NannyEvidencePlugin(NannyPlugin):
    """Dask nanny plugin: watches the worker process and reports how it died."""

    idempotent = False
    name = PLUGIN_NAME

    def __init__(self, kernel_log: str = "/dev/kmsg") -> None:
        self.kernel_log = kernel_log
        self._nanny: Nanny | None = None
        self._kmsg: KernelLogWatch | None = None
        self._callback: PeriodicCallback | None = None
        self._proc: _Process | None = None
        #: what is known of the live worker process so far (its death adds the rest)
        self._current: DeathRecord | None = None
        self._pending: list[tuple[float, DeathRecord]] = []

    def setup(self, nanny: Nanny) -> None:
        self._nanny = nanny
        self._kmsg = KernelLogWatch(self.kernel_log)
        self._kmsg.start()
        self._callback = PeriodicCallback(self._guarded(self.sample), SAMPLE_INTERVAL_S * 1000)
        self._callback.start()

    def teardown(self, nanny: Nanny) -> None:
        if self._callback is not None:
            self._callback.stop()
        if self._kmsg is not None:
            self._kmsg.stop()

    def _guarded(self, fn: Callable[[], None]) -> Callable[[], None]:
        def call() -> None:
            try:
                fn()
            except Exception:  # evidence gathering must never take the nanny down
                logging.getLogger("oomguard.dask").exception("oomguard nanny plugin")

        return call

    def sample(self) -> None:
        """One tick: notice a dead worker process, sample the live one, publish deaths."""
        nanny = self._nanny
        wp = getattr(nanny, "process", None)
        proc: _Process | None = getattr(wp, "process", None)
        old = self._proc
        if old is not None and not old.is_alive():
            self._died(old)
            self._proc = None
        if proc is not None and proc is not self._proc and proc.is_alive() and proc.pid:
            self._proc = proc
            address = getattr(nanny, "worker_address", None)
            self._current = DeathRecord(
                pid=proc.pid,
                start_time=procfs.process_start_time(proc.pid),
                worker=None if address is None else str(address),
                counters_before=_reading(proc.pid),
                peak_rss=0,
            )
        current = self._current
        if self._proc is not None and self._proc.is_alive() and current is not None:
            rss = procfs.rss_bytes(current.pid)
            if rss:  # 0: a process being torn down
                self._current = replace(current, rss=rss, peak_rss=max(current.peak_rss or 0, rss))
        self._publish()

    def _died(self, proc: _Process) -> None:
        current = self._current
        if current is None:
            current = DeathRecord(pid=proc.pid or 0)
        before = current.counters_before
        mm = getattr(self._nanny, "memory_manager", None)
        limit = getattr(mm, "memory_limit", None)
        record = replace(
            current,
            exitcode=proc.exitcode,
            # Read at once: the kill was counted before the signal was sent.
            counters_after=_reading_at(before.path, before.version) if before else None,
            memory_limit=None if limit is None else int(limit),
            nanny_terminated=getattr(mm, "_last_terminated_pid", None) == current.pid,
            kernel_log=self._kmsg.unavailable if self._kmsg is not None else None,
            progress=read_progress(current.pid) if current.pid else None,
        )
        self._pending.append((time.monotonic() + KERNEL_LOG_WAIT_S, record))

    def _publish(self) -> None:
        keep = []
        for deadline, record in self._pending:
            event = self._kmsg.find(pid=record.pid) if self._kmsg is not None else None
            if event is not None:
                record = replace(record, kernel=event, kernel_lines=tuple(event.lines))
            elif (
                record.exitcode == -9
                and not record.nanny_terminated
                and record.kernel_log is None
                and time.monotonic() < deadline
            ):
                keep.append((deadline, record))  # the "Killed process" line can lag
                continue
            if self._nanny is not None:
                self._nanny.log_event(DEATH_TOPIC, record.to_json())
        self._pending = keep
