"""One memory cgroup (v1 or v2): its limit, counters and processes; the cgroupfs calls.

:class:`MemoryCgroup` is a memory cgroup oomguard manages (a worker's), and
:class:`CgroupCounters` a snapshot of its counters (:func:`classify_counters` says from two
of them whether its process was OOM-killed). Every module that creates or removes cgroups
(:mod:`oomguard.cgroups.detect` probes with one, :mod:`oomguard.cgroups.workers`
builds the workers' subtree) does it through this module's ``_mkdir``, ``_rmdir`` and
``_write``, which the fake-tree tests replace.

Detection (:func:`~oomguard.cgroups.detect.detect_isolation`) and the worker subtree
(:class:`~oomguard.cgroups.workers.WorkerCgroups`) build on this module and live beside
it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from oomguard.cgroups import v1, v2
from oomguard.errors import IsolationError
from oomguard.procfs import read_int, read_text

# Indirections the fake-tree tests replace: on cgroupfs, mkdir makes the kernel create
# the control files and rmdir removes a directory that still lists them.
_mkdir = os.mkdir
_rmdir = os.rmdir


# --------------------------------------------------------------------------- counters


@dataclass(frozen=True)
class CgroupCounters:
    """A snapshot of one cgroup's memory counters (``None``: the kernel has no such file)."""

    oom: int | None
    oom_kill: int | None
    usage_bytes: int | None
    peak_bytes: int | None
    limit_bytes: int | None

    def to_json(self) -> dict[str, int | None]:
        """The counters as a JSON-ready dict."""
        return {
            "oom": self.oom,
            "oom_kill": self.oom_kill,
            "usage_bytes": self.usage_bytes,
            "peak_bytes": self.peak_bytes,
            "limit_bytes": self.limit_bytes,
        }


def _rose(before: int | None, after: int | None) -> bool:
    return before is not None and after is not None and after > before


def classify_counters(before: CgroupCounters, after: CgroupCounters) -> str | None:
    """Say from a worker cgroup's counters whether its process was OOM-killed, and where.

    ``"oom_cgroup"``: the worker cgroup's own limit was hit and the kernel killed in it.
    On v2 that is ``oom_kill`` *and* ``oom`` rising: memory.events is hierarchical, so
    ``oom_kill`` also rises when an ancestor's limit was hit and the victim sat in this
    cgroup, while ``oom`` only counts limits hit at or below it (a worker cgroup has no
    children), hence ``"oom_ancestor"`` when only ``oom_kill`` rose. v1 counts
    ``oom_kill`` on the victim's own cgroup whichever limit was hit, so counters alone
    say ``"oom_cgroup"``; the kernel log line (``oom_memcg`` vs ``task_memcg``) is what
    tells an ancestor's limit apart there. ``None``: no OOM kill was counted.
    """
    if not _rose(before.oom_kill, after.oom_kill):
        return None
    if before.oom is None or after.oom is None:
        return "oom_cgroup"  # v1: no "oom" counter
    return "oom_cgroup" if _rose(before.oom, after.oom) else "oom_ancestor"


def read_pids(path: Path) -> list[int]:
    """The pids listed in a ``cgroup.procs`` file (empty when it is gone)."""
    text = read_text(path)
    if text is None:
        return []
    return [int(word) for word in text.split() if word.isdigit()]


def _write(path: Path, value: str) -> None:
    # No O_CREAT: cgroupfs files exist or the kernel lacks the feature; O_TRUNC only
    # matters for the regular files of a fake tree.
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


# ------------------------------------------------------------------ one memory cgroup


class MemoryCgroup:
    """One memory cgroup oomguard manages (a worker's), v1 or v2."""

    def __init__(self, path: Path, version: int) -> None:
        if version not in (1, 2):
            raise ValueError(f"cgroup version must be 1 or 2, not {version!r}")
        self.path = path
        self.version = version
        # v2 memory.peak resets are per open file (kernel >= 6.12): the fd that reset it
        # must be kept and read from, or the reset is invisible.
        self._peak_fd: int | None = None

    def __repr__(self) -> str:
        return f"MemoryCgroup({str(self.path)!r}, version={self.version})"

    # -- limits

    def set_limit(self, limit_bytes: int | None) -> None:
        """Set the memory limit (``None``: unlimited), swap included where the kernel can.

        v2: ``memory.max``, and ``memory.swap.max`` 0 (``max`` when unlimited) so the
        limit is not stretched by swap. Lowering below the usage makes the kernel
        reclaim and, failing that, OOM-kill in the cgroup (v2 never refuses).
        v1: ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes`` (set equal,
        i.e. no swap); the kernel requires memsw >= limit at every moment, so memsw is
        written first when the limit grows and last when it shrinks. Lowering below
        what the kernel can reclaim fails with EBUSY: then :class:`IsolationError` is
        raised with the numbers and the old limits stay in force.
        """
        if limit_bytes is not None and limit_bytes <= 0:
            raise IsolationError(
                f"memory limit must be positive, not {limit_bytes}", limit_bytes=limit_bytes
            )
        try:
            if self.version == 2:
                _write(self.path / "memory.max", "max" if limit_bytes is None else str(limit_bytes))
                swap = self.path / "memory.swap.max"
                if swap.exists():
                    _write(swap, "max" if limit_bytes is None else "0")
                return
            self._set_limit_v1(limit_bytes)
        except IsolationError:
            raise
        except OSError as err:
            raise IsolationError(
                f"cannot set the memory limit of {self.path}: {err.strerror or err}",
                cgroup=str(self.path),
                limit_bytes=limit_bytes,
            ) from err

    def _set_limit_v1(self, limit_bytes: int | None) -> None:
        value = "-1" if limit_bytes is None else str(limit_bytes)
        memsw = self.path / "memory.memsw.limit_in_bytes"
        current = v1.read_limit(self.path / "memory.limit_in_bytes")
        growing = limit_bytes is None or (current is not None and limit_bytes >= current)
        order = [memsw, self.path / "memory.limit_in_bytes"]
        if not growing:
            order.reverse()
        for target in order:
            if target == memsw and not memsw.exists():
                continue  # kernel without swap accounting (swapaccount=0)
            try:
                _write(target, value)
            except OSError as err:
                if err.errno != errno.EBUSY:
                    raise
                usage = read_int(self.path / "memory.usage_in_bytes")
                raise IsolationError(
                    f"cannot lower the memory limit of {self.path} to {limit_bytes} bytes: "
                    f"it uses {usage} bytes the kernel cannot reclaim (EBUSY); the limit "
                    f"stays {current if current is not None else 'unlimited'}",
                    cgroup=str(self.path),
                    limit_bytes=limit_bytes,
                    usage_bytes=usage,
                ) from err

    # -- counters

    def counters(self) -> CgroupCounters:
        """Read the counters now (read them when ``waitpid`` returns, before removing)."""
        if self.version == 2:
            events = v2.parse_flat_keyed(read_text(self.path / "memory.events") or "")
            return CgroupCounters(
                oom=events.get("oom"),
                oom_kill=events.get("oom_kill"),
                usage_bytes=read_int(self.path / "memory.current"),
                peak_bytes=self._read_peak_v2(),
                limit_bytes=v2.read_max(self.path / "memory.max"),
            )
        control = v1.parse_oom_control(read_text(self.path / "memory.oom_control") or "")
        return CgroupCounters(
            oom=None,
            oom_kill=control.get("oom_kill"),
            usage_bytes=read_int(self.path / "memory.usage_in_bytes"),
            peak_bytes=read_int(self.path / "memory.max_usage_in_bytes"),
            limit_bytes=v1.read_limit(self.path / "memory.limit_in_bytes"),
        )

    def oom_kills(self) -> int | None:
        """The ``oom_kill`` counter alone (one small file): cheap enough for every task."""
        if self.version == 2:
            return v2.parse_flat_keyed(read_text(self.path / "memory.events") or "").get("oom_kill")
        return v1.parse_oom_control(read_text(self.path / "memory.oom_control") or "").get(
            "oom_kill"
        )

    def read_peak(self) -> int | None:
        """The peak counter alone (v2: through the file a reset was written to)."""
        if self.version == 2:
            return self._read_peak_v2()
        return read_int(self.path / "memory.max_usage_in_bytes")

    def _read_peak_v2(self) -> int | None:
        if self._peak_fd is not None:
            try:
                raw = os.pread(self._peak_fd, 64, 0)
                return int(raw.decode().strip())
            except (OSError, ValueError):
                return None
        return read_int(self.path / "memory.peak")

    def reset_peak(self) -> bool:
        """Restart peak tracking from the current usage; ``False`` if the kernel cannot.

        v1: write 0 to ``memory.max_usage_in_bytes`` (global for the cgroup). v2
        (kernel >= 6.12): a write to ``memory.peak`` resets the peak *only for reads
        through that same open file*, so this keeps the file open and :meth:`counters`
        reads the peak through it until :meth:`remove`. Older v2 kernels refuse to open
        ``memory.peak`` for writing (or lack it): ``False``, and the peak keeps counting
        from the cgroup's creation.
        """
        if self.version == 1:
            try:
                _write(self.path / "memory.max_usage_in_bytes", "0")
            except OSError:
                return False
            return True
        self._close_peak()
        try:
            fd = os.open(self.path / "memory.peak", os.O_RDWR)
        except OSError:
            return False
        try:
            os.write(fd, b"reset\n")
        except OSError:
            os.close(fd)
            return False
        self._peak_fd = fd
        return True

    def _close_peak(self) -> None:
        if self._peak_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._peak_fd)
            self._peak_fd = None

    # -- processes

    def add_process(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into this cgroup."""
        try:
            _write(self.path / "cgroup.procs", str(pid))
        except OSError as err:
            raise IsolationError(
                f"cannot move process {pid} into {self.path}: {err.strerror or err}",
                cgroup=str(self.path),
                pid=pid,
            ) from err

    def pids(self) -> list[int]:
        """The processes in this cgroup now (empty when it is gone)."""
        return read_pids(self.path / "cgroup.procs")

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup (our workers and their children).

        v2 ``cgroup.kill`` (kernel >= 5.14) kills atomically, forks included; elsewhere
        each pid gets SIGKILL, a few rounds in case one forked meanwhile.
        """
        kill_file = self.path / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            try:
                _write(kill_file, "1")
                return
            except OSError:
                pass  # fall back to one signal per process
        for _ in range(10):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self, timeout: float = 2.0) -> None:
        """Remove the cgroup; retry while the kernel still has exiting tasks in it.

        Already gone is fine. Still busy after ``timeout`` seconds raises
        :class:`IsolationError` naming the processes left in it.
        """
        self._close_peak()
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                _rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as err:
                if err.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.EAGAIN):
                    raise IsolationError(
                        f"cannot remove {self.path}: {err.strerror or err}",
                        cgroup=str(self.path),
                    ) from err
                if time.monotonic() >= deadline:
                    raise IsolationError(
                        f"cannot remove {self.path}: still busy after {timeout:g}s "
                        f"(processes: {self.pids() or 'none listed'})",
                        cgroup=str(self.path),
                    ) from err
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
