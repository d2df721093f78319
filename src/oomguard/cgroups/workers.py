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
from oomguard.cgroups import v2
from oomguard.cgroups.cgroup import MemoryCgroup, read_pids
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
