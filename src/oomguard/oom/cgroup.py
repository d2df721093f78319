"""Memory cgroups for workers: detection, per-worker cgroups, counters (v1 and v2).

oomguard only ever creates cgroups *below the cgroup it runs in*, in a subtree named
``<own>/oomguard-<pid>-<start_time>/worker-N``, and removes them when done. A crashed
run's subtree is recognised by the ``(pid, start_time)`` in its name (pids are reused,
the pair is not) and cleaned up by the next run.

Every reader takes ``proc_root`` and ``cgroup_root`` so tests point it at fake trees.
``cgroup_root`` stands for ``/sys/fs/cgroup``: cgroup mounts found in mountinfo below
``/sys/fs/cgroup`` are looked up below ``cgroup_root`` instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from oomguard.errors import IsolationError
from oomguard.oom import cgroup_v1, cgroup_v2
from oomguard.oom.cgroupinfo import (
    DEFAULT_CGROUP_ROOT,
    locate_memory_cgroup,
    memory_limit_of,
    process_start_time,
    read_int,
    read_max,
    read_pids,
    read_text,
    read_v1_limit,
)

#: The leaf a v2 scheduler moves itself into so its own cgroup has no processes and may
#: enable the memory controller for its children (the "no internal processes" rule).
SCHEDULER_LEAF = "oomguard-scheduler"

_RUN_DIR_RE = re.compile(r"^oomguard-(?:probe-)?(?P<pid>[0-9]+)-(?P<start>[0-9]+)(?:-[0-9a-f]+)?$")

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


def _write(path: Path, value: str) -> None:
    # No O_CREAT: cgroupfs files exist or the kernel lacks the feature; O_TRUNC only
    # matters for the regular files of a fake tree.
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _alive(pid: int, start: int, proc_root: Path) -> bool:
    return process_start_time(pid, proc_root) == start


# ----------------------------------------------------------------------- detection


@dataclass(frozen=True)
class IsolationPlan:
    """How workers will be isolated on this machine, and why."""

    mode: str  # "cgroup-v2" | "cgroup-v1" | "watchdog"
    reason: str
    own_cgroup: Path | None
    own_limit_bytes: int | None
    own_oom_group: bool | None
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The plan as a JSON-ready dict."""
        return {
            "mode": self.mode,
            "reason": self.reason,
            "own_cgroup": str(self.own_cgroup) if self.own_cgroup is not None else None,
            "own_limit_bytes": self.own_limit_bytes,
            "own_oom_group": self.own_oom_group,
            "warnings": list(self.warnings),
        }


OOM_GROUP_WARNING = (
    "a worker OOM will kill the whole container (Kubernetes >= 1.28 sets "
    "memory.oom.group=1) because oomguard cannot create worker cgroups here: delegate a "
    "writable cgroup v2 subtree to the container, or set the kubelet's "
    "--singleProcessOOMKill=true (Kubernetes >= 1.32), or keep the memory budget well "
    "below the container limit so the watchdog stops workers first"
)
OOM_GROUP_ANCESTOR_WARNING = (
    "memory.oom.group=1 on oomguard's own cgroup: worker limits keep ordinary OOMs inside "
    "each worker, but if the container limit itself is hit the kernel kills the whole "
    "container, scheduler included; keep the memory budget below the container limit"
)


def _probe_writable(directory: Path, proc_root: Path) -> str | None:
    """mkdir + rmdir a probe cgroup below ``directory``; ``None`` if that works, else why."""
    me = os.getpid()
    start = process_start_time(me, proc_root) or 0
    probe = directory / f"oomguard-probe-{me}-{start}-{secrets.token_hex(4)}"
    try:
        _mkdir(probe)
    except OSError as err:
        return f"cannot create cgroups below {directory}: {err.strerror or err}"
    try:
        _rmdir(probe)
    except OSError as err:
        return f"created {probe} but cannot remove it: {err.strerror or err}"
    return None


def _watchdog(
    reason: str,
    directory: Path | None,
    limit: int | None,
    oom_group: bool | None,
    warnings: list[str],
) -> IsolationPlan:
    if oom_group:
        warnings.append(OOM_GROUP_WARNING)
    return IsolationPlan("watchdog", reason, directory, limit, oom_group, tuple(warnings))


def detect_isolation(
    mode: str = "auto",
    *,
    proc_root: Path = Path("/proc"),
    cgroup_root: Path = DEFAULT_CGROUP_ROOT,
    pid: int | None = None,
) -> IsolationPlan:
    """Decide how workers will be isolated: cgroup v2, cgroup v1 or the RSS watchdog.

    ``mode="auto"`` picks the first that works; ``"cgroup"`` raises
    :class:`~oomguard.errors.IsolationError` when neither cgroup version works;
    ``"watchdog"`` never touches cgroups (but still reports the own cgroup). Writability
    is probed for real by creating and removing a cgroup below the own one.
    """
    if mode not in ("auto", "cgroup", "watchdog"):
        raise IsolationError(
            f"unknown isolation mode {mode!r} (use auto, cgroup or watchdog)", mode=mode
        )
    me = pid if pid is not None else os.getpid()
    version, directory, top, found = locate_memory_cgroup(proc_root, cgroup_root, me)
    warnings: list[str] = []
    limit: int | None = None
    oom_group: bool | None = None
    if version is not None and directory is not None and top is not None:
        limit = memory_limit_of(directory, top, version)
        if version == 2:
            value = read_int(directory / "memory.oom.group")
            oom_group = None if value is None else value == 1
    if mode == "watchdog":
        return _watchdog("watchdog mode was asked for", directory, limit, oom_group, warnings)
    if version is None or directory is None:
        return _fail(mode, f"no memory cgroup: {found}", None, None, None, warnings)
    problem = _probe_writable(directory, proc_root)
    if problem is not None:
        return _fail(
            mode, f"no writable memory cgroup: {problem}", directory, limit, oom_group, warnings
        )
    if version == 1:
        return IsolationPlan(
            "cgroup-v1",
            f"cgroup v1 memory hierarchy is writable at {directory}: each worker gets its own "
            "memory cgroup below it",
            directory,
            limit,
            None,
            (),
        )
    # v2: children only get the memory controller if the own cgroup enables it in
    # cgroup.subtree_control, which it may only do while it has no processes itself.
    subtree = cgroup_v2.parse_controllers(read_text(directory / "cgroup.subtree_control") or "")
    procs = read_pids(directory / "cgroup.procs")
    is_root = directory == top
    others = [p for p in procs if p != me]
    if "memory" not in subtree and procs and not is_root:
        if others:
            shown = ", ".join(str(p) for p in others[:5]) + (" ..." if len(others) > 5 else "")
            return _fail(
                mode,
                f"cgroup v2 at {directory} holds processes that are not oomguard's "
                f"({shown}), so the memory controller cannot be enabled for worker cgroups "
                "(no internal processes rule); run oomguard in its own delegated cgroup "
                "(systemd-run --user --scope -p Delegate=yes ...)",
                directory,
                limit,
                oom_group,
                warnings,
            )
        reason = (
            f"cgroup v2 memory controller is delegated at {directory}: oomguard moves itself "
            f"to {SCHEDULER_LEAF}/ and gives each worker its own memory cgroup"
        )
    else:
        reason = (
            f"cgroup v2 memory controller is delegated at {directory}: each worker gets its "
            "own memory cgroup below it"
        )
    if oom_group:
        warnings.append(OOM_GROUP_ANCESTOR_WARNING)
    return IsolationPlan("cgroup-v2", reason, directory, limit, oom_group, tuple(warnings))


def _fail(
    mode: str,
    reason: str,
    directory: Path | None,
    limit: int | None,
    oom_group: bool | None,
    warnings: list[str],
) -> IsolationPlan:
    if mode == "cgroup":
        raise IsolationError(reason, cgroup=str(directory) if directory else None)
    return _watchdog(reason, directory, limit, oom_group, warnings)


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
        current = read_v1_limit(self.path / "memory.limit_in_bytes")
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
            events = cgroup_v2.parse_flat_keyed(read_text(self.path / "memory.events") or "")
            return CgroupCounters(
                oom=events.get("oom"),
                oom_kill=events.get("oom_kill"),
                usage_bytes=read_int(self.path / "memory.current"),
                peak_bytes=self._read_peak_v2(),
                limit_bytes=read_max(self.path / "memory.max"),
            )
        control = cgroup_v1.parse_oom_control(read_text(self.path / "memory.oom_control") or "")
        return CgroupCounters(
            oom=None,
            oom_kill=control.get("oom_kill"),
            usage_bytes=read_int(self.path / "memory.usage_in_bytes"),
            peak_bytes=read_int(self.path / "memory.max_usage_in_bytes"),
            limit_bytes=read_v1_limit(self.path / "memory.limit_in_bytes"),
        )

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


# ------------------------------------------------------------------ the worker subtree


class WorkerCgroups:
    """The subtree of oomguard worker cgroups below the own cgroup.

    Layout: ``<own>/oomguard-<pid>-<start_time>/worker-N``.
    """

    def __init__(
        self, plan: IsolationPlan, run_dir: Path, version: int, proc_root: Path = Path("/proc")
    ) -> None:
        self.plan = plan
        self.run_dir = run_dir
        self.version = version
        self._proc_root = proc_root
        self._workers: dict[str, MemoryCgroup] = {}

    @classmethod
    def create(
        cls, plan: IsolationPlan, *, proc_root: Path = Path("/proc"), pid: int | None = None
    ) -> WorkerCgroups:
        """Create this run's subtree below ``plan.own_cgroup``.

        First removes what crashed earlier runs left (``oomguard-<pid>-<start>`` whose
        process is gone), killing the processes still in them. On v2, where the own
        cgroup does not yet enable the memory controller for its children, oomguard's
        own process (only ours; anything else is refused) moves into
        ``<own>/oomguard-scheduler`` first, as delegated cgroups expect.
        """
        if plan.mode not in ("cgroup-v1", "cgroup-v2") or plan.own_cgroup is None:
            raise IsolationError(
                f"worker cgroups need a cgroup isolation plan, not {plan.mode!r}: {plan.reason}",
                mode=plan.mode,
            )
        version = 2 if plan.mode == "cgroup-v2" else 1
        own = plan.own_cgroup
        me = pid if pid is not None else os.getpid()
        start = process_start_time(me, proc_root)
        if start is None:
            raise IsolationError(f"cannot read the start time of process {me}", pid=me)
        remove_leftovers(own, version, proc_root=proc_root)
        run_dir = own / f"oomguard-{me}-{start}"
        try:
            if version == 2:
                _enable_memory_v2(own, me)
            with contextlib.suppress(FileExistsError):
                _mkdir(run_dir)
            if version == 2:
                _write(run_dir / "cgroup.subtree_control", "+memory")
        except OSError as err:
            raise IsolationError(
                f"cannot create worker cgroups below {own}: {err.strerror or err}",
                cgroup=str(own),
            ) from err
        return cls(plan, run_dir, version, proc_root)

    def new_worker(self, name: str, limit_bytes: int | None) -> MemoryCgroup:
        """Create (or reuse) the worker cgroup ``name`` with the given memory limit.

        On v2 ``memory.oom.group`` is set to 1, so the OOM killer takes a worker and all
        its children together instead of leaving half a worker behind.
        """
        if not name or "/" in name or name in (".", "..") or "\n" in name:
            raise IsolationError(f"invalid worker cgroup name {name!r}", name=name)
        cgroup = MemoryCgroup(self.run_dir / name, self.version)
        try:
            with contextlib.suppress(FileExistsError):
                _mkdir(cgroup.path)
            if self.version == 2:
                _write(cgroup.path / "memory.oom.group", "1")
        except OSError as err:
            raise IsolationError(
                f"cannot create worker cgroup {cgroup.path}: {err.strerror or err}",
                cgroup=str(cgroup.path),
            ) from err
        cgroup.set_limit(limit_bytes)
        self._workers[name] = cgroup
        return cgroup

    def remove_all(self) -> None:
        """Kill what is left in the worker cgroups and remove them and the run's subtree.

        Tries everything, then raises the first :class:`IsolationError` if something
        could not be removed.
        """
        first: IsolationError | None = None
        for cgroup in [*self._workers.values(), *_subdirs(self.run_dir, self.version)]:
            try:
                cgroup.kill_all()
                cgroup.remove()
            except IsolationError as err:
                first = first or err
        self._workers.clear()
        try:
            MemoryCgroup(self.run_dir, self.version).remove()
        except IsolationError as err:
            first = first or err
        if first is not None:
            raise first


def _subdirs(directory: Path, version: int) -> list[MemoryCgroup]:
    try:
        return [MemoryCgroup(p, version) for p in sorted(directory.iterdir()) if p.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _enable_memory_v2(own: Path, me: int) -> None:
    subtree = cgroup_v2.parse_controllers(read_text(own / "cgroup.subtree_control") or "")
    if "memory" in subtree:
        return
    procs = read_pids(own / "cgroup.procs")
    others = [p for p in procs if p != me]
    if others:
        raise IsolationError(
            f"cannot enable the memory controller below {own}: it holds processes that "
            f"are not oomguard's ({', '.join(map(str, others[:5]))})",
            cgroup=str(own),
        )
    if me in procs:
        leaf = own / SCHEDULER_LEAF
        with contextlib.suppress(FileExistsError):
            _mkdir(leaf)
        _write(leaf / "cgroup.procs", str(me))
    _write(own / "cgroup.subtree_control", "+memory")


def remove_leftovers(own: Path, version: int, *, proc_root: Path = Path("/proc")) -> list[Path]:
    """Remove ``oomguard-<pid>-<start>`` subtrees whose process no longer exists.

    Processes still in them (orphaned workers of a crashed run) are killed first.
    Returns the directories removed; ones that cannot be removed are left alone.
    """
    removed: list[Path] = []
    try:
        entries = sorted(own.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _RUN_DIR_RE.match(entry.name)
        if match is None or not entry.is_dir():
            continue
        if _alive(int(match["pid"]), int(match["start"]), proc_root):
            continue
        try:
            for child in _subdirs(entry, version):
                child.kill_all()
                child.remove()
            run = MemoryCgroup(entry, version)
            run.kill_all()
            run.remove()
        except IsolationError:
            continue
        removed.append(entry)
    return removed
