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
from pathlib import Path
from typing import Any

from distributed import Nanny
from distributed.diagnostics.plugin import NannyPlugin
from tornado.ioloop import PeriodicCallback

from oomguard import procfs
from oomguard.cgroups.cgroup import MemoryCgroup
from oomguard.cgroups.locate import locate_memory_cgroup
from oomguard.executors.dask.remote import DEATH_TOPIC, PLUGIN_NAME
from oomguard.executors.dask.remote.progress import read_progress
from oomguard.kernlog.watch import KernelLogWatch

SAMPLE_INTERVAL_S = 0.1
#: after a SIGKILL with no OOM line yet, how long to wait for the kernel's line
KERNEL_LOG_WAIT_S = 2.0


def _counters(pid: int) -> dict[str, Any] | None:
    """The memory cgroup counters of ``pid``'s cgroup, where they can be read."""
    try:
        version, directory, _, _ = locate_memory_cgroup(pid=pid)
    except (OSError, ValueError):
        return None
    if version is None or directory is None:
        return None
    return _counters_at(str(directory), version)


def _counters_at(path: str, version: int) -> dict[str, Any] | None:
    try:
        counters = MemoryCgroup(Path(path), version).counters().to_json()
    except (OSError, ValueError):
        return None
    return dict(counters, path=path, version=version)


class NannyEvidencePlugin(NannyPlugin):
    """Dask nanny plugin: watches the worker process and reports how it died."""

    idempotent = False
    name = PLUGIN_NAME

    def __init__(self, kernel_log: str = "/dev/kmsg") -> None:
        self.kernel_log = kernel_log
        self._nanny: Nanny | None = None
        self._kmsg: KernelLogWatch | None = None
        self._callback: PeriodicCallback | None = None
        self._proc: Any = None
        self._current: dict[str, Any] = {}
        self._pending: list[tuple[float, dict[str, Any]]] = []

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
        proc = getattr(wp, "process", None)
        old = self._proc
        if old is not None and not old.is_alive():
            self._died(old)
            self._proc = None
        if proc is not None and proc is not self._proc and proc.is_alive() and proc.pid:
            self._proc = proc
            self._current = {
                "pid": proc.pid,
                "start_time": procfs.process_start_time(proc.pid),
                "worker": getattr(nanny, "worker_address", None),
                "counters_before": _counters(proc.pid),
                "rss": None,
                "peak_rss": 0,
            }
        if self._proc is not None and self._proc.is_alive():
            rss = procfs.rss_bytes(self._proc.pid)
            if rss:  # 0: a process being torn down
                self._current["rss"] = rss
                self._current["peak_rss"] = max(self._current["peak_rss"], rss)
        self._publish()

    def _died(self, proc: Any) -> None:
        record = dict(self._current)
        pid = record.get("pid", proc.pid)
        record["exitcode"] = proc.exitcode
        before = record.get("counters_before")
        # Read at once: the kill was counted before the signal was sent.
        record["counters_after"] = (
            _counters_at(before["path"], before["version"]) if before else None
        )
        mm = getattr(self._nanny, "memory_manager", None)
        record["memory_limit"] = getattr(mm, "memory_limit", None)
        record["nanny_terminated"] = getattr(mm, "_last_terminated_pid", None) == pid
        record["kernel_log"] = self._kmsg.unavailable if self._kmsg is not None else None
        record["progress"] = read_progress(pid) if pid else None
        self._pending.append((time.monotonic() + KERNEL_LOG_WAIT_S, record))

    def _publish(self) -> None:
        keep = []
        for deadline, record in self._pending:
            event = self._kmsg.find(pid=record.get("pid")) if self._kmsg is not None else None
            if event is not None:
                record["kernel"] = event.to_json()
                record["kernel_lines"] = list(event.lines)
            elif (
                record.get("exitcode") == -9
                and not record["nanny_terminated"]
                and record["kernel_log"] is None
                and time.monotonic() < deadline
            ):
                keep.append((deadline, record))  # the "Killed process" line can lag
                continue
            if self._nanny is not None:
                self._nanny.log_event(DEATH_TOPIC, record)
        self._pending = keep
