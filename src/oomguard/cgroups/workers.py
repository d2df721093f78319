"""The subtree of worker cgroups oomguard creates below its own cgroup, and its cleanup.

oomguard only ever creates cgroups *below the cgroup it runs in*, in a subtree named
``<own>/oomguard-<pid>-<start_time>/worker-N``, and removes them when done. A crashed
run's subtree is recognised by the ``(pid, start_time)`` in its name (pids are reused,
the pair is not) and cleaned up by the next run (:func:`remove_leftovers`).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path

from oomguard.cgroups import cgroup as cgroupfs  # tests replace its _mkdir, _write
from oomguard.cgroups import v1, v2
from oomguard.cgroups.cgroup import CgroupCounters, MemoryCgroup, read_pids
from oomguard.cgroups.detect import SCHEDULER_LEAF, IsolationPlan
from oomguard.errors import IsolationError
from oomguard.procfs import process_start_time, read_text

_RUN_DIR_RE = re.compile(r"^oomguard-(?:probe-)?(?P<pid>[0-9]+)-(?P<start>[0-9]+)(?:-[0-9a-f]+)?$")


#: the run subtrees this process's :class:`WorkerCgroups` use now: two Runners (or a Runner
#: and an Executor) in one process each get their own, so neither names, kills nor removes
#: the other's workers
_IN_USE: set[Path] = set()
_IN_USE_GUARD = threading.Lock()


def _claim_run_dir(own: Path, pid: int, start: int) -> Path:
    """``<own>/oomguard-<pid>-<start>``, or ``...-<n>`` (hex) if this process already uses it."""
    with _IN_USE_GUARD:
        run_dir = own / f"oomguard-{pid}-{start}"
        n = 0
        while run_dir in _IN_USE:
            n += 1
            run_dir = own / f"oomguard-{pid}-{start}-{n:x}"
        _IN_USE.add(run_dir)
        return run_dir


#: the files a worker cgroup's counters are read from: oom_kill (and oom), usage, peak,
#: limit (v2's peak is read through the cgroup's own reset file, see MemoryCgroup)
_COUNTER_FILES = {
    1: (
        "memory.oom_control",
        "memory.usage_in_bytes",
        "memory.max_usage_in_bytes",
        "memory.limit_in_bytes",
    ),
    2: ("memory.events", "memory.current", None, "memory.max"),
}


def _int(raw: bytes) -> int | None:
    try:
        return int(raw)
    except ValueError:
        return None


class CounterFiles:
    """A worker cgroup's counter files, opened once and read with ``pread``.

    Read around every batch (the pool, before it sends one) and every attempt (the
    worker, for its peak): opening, reading and closing each file by its path cost about
    33 us a file here (130 us a snapshot of four), one ``pread`` of a file kept open about
    1.3 us. Where a file cannot be opened (a fake tree, an old kernel) :meth:`counters`
    reads the cgroup's files by path as :meth:`MemoryCgroup.counters` does. Close it
    before the cgroup is removed.
    """

    def __init__(self, cgroup: MemoryCgroup) -> None:
        self.cgroup = cgroup
        self._fds: list[int | None] = []
        self._complete = True
        for name in _COUNTER_FILES[cgroup.version]:
            fd = None
            if name is not None:
                # v1's peak file is also where a reset is written (reset_peak)
                flags = os.O_RDWR if name == "memory.max_usage_in_bytes" else os.O_RDONLY
                try:
                    fd = os.open(cgroup.path / name, flags | os.O_CLOEXEC)
                except OSError:
                    self._complete = False
            self._fds.append(fd)

    def _read(self, index: int) -> bytes | None:
        fd = self._fds[index]
        if fd is None:
            return None
        try:
            return os.pread(fd, 4096, 0)
        except OSError:
            return None

    def counters(self) -> CgroupCounters:
        """The counters now, as :meth:`MemoryCgroup.counters` reads them."""
        if not self._complete:
            return self.cgroup.counters()
        events, usage, peak, limit = (self._read(i) for i in range(4))
        if self.cgroup.version == 2:
            keyed = v2.parse_flat_keyed(events.decode() if events else "")
            try:
                max_bytes = v2.parse_max(limit.decode()) if limit else None
            except ValueError:
                max_bytes = None
            return CgroupCounters(
                oom=keyed.get("oom"),
                oom_kill=keyed.get("oom_kill"),
                usage_bytes=_int(usage) if usage else None,
                peak_bytes=self.cgroup.read_peak(),
                limit_bytes=max_bytes,
            )
        try:
            limit_bytes = v1.parse_limit(limit.decode()) if limit else None
        except ValueError:
            limit_bytes = None
        return CgroupCounters(
            oom=None,
            oom_kill=v1.parse_oom_control(events.decode() if events else "").get("oom_kill"),
            usage_bytes=_int(usage) if usage else None,
            peak_bytes=_int(peak) if peak else None,
            limit_bytes=limit_bytes,
        )

    def reset_peak(self) -> bool:
        """:meth:`MemoryCgroup.reset_peak`, with v1's reset written to the file kept open."""
        fd = self._fds[2]
        if self.cgroup.version == 1 and fd is not None:
            try:
                os.pwrite(fd, b"0", 0)
            except OSError:
                return False
            return True
        return self.cgroup.reset_peak()

    def close(self) -> None:
        for fd in self._fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fds = [None] * len(self._fds)
        self._complete = False


def _alive(pid: int, start: int, proc_root: Path) -> bool:
    return process_start_time(pid, proc_root) == start


class WorkerCgroups:
    """The subtree of oomguard worker cgroups below the own cgroup.

    Layout: ``<own>/oomguard-<pid>-<start_time>/worker-N``; a second one in the same
    process at once gets ``oomguard-<pid>-<start_time>-<n>``.
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
        run_dir = _claim_run_dir(own, me, start)
        try:
            if version == 2:
                _enable_memory_v2(own, me)
            with contextlib.suppress(FileExistsError):
                cgroupfs._mkdir(run_dir)
            if version == 2:
                cgroupfs._write(run_dir / "cgroup.subtree_control", "+memory")
        except OSError as err:
            with _IN_USE_GUARD:
                _IN_USE.discard(run_dir)
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
                cgroupfs._mkdir(cgroup.path)
            if self.version == 2:
                cgroupfs._write(cgroup.path / "memory.oom.group", "1")
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
        else:
            with _IN_USE_GUARD:
                _IN_USE.discard(self.run_dir)
        if first is not None:
            raise first


def _subdirs(directory: Path, version: int) -> list[MemoryCgroup]:
    try:
        return [MemoryCgroup(p, version) for p in sorted(directory.iterdir()) if p.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _enable_memory_v2(own: Path, me: int) -> None:
    subtree = v2.parse_controllers(read_text(own / "cgroup.subtree_control") or "")
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
            cgroupfs._mkdir(leaf)
        cgroupfs._write(leaf / "cgroup.procs", str(me))
    cgroupfs._write(own / "cgroup.subtree_control", "+memory")


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
