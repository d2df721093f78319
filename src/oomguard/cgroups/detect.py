"""How workers will be isolated on this machine: cgroup v2, cgroup v1 or the RSS watchdog.

:func:`detect_isolation` finds the memory cgroup oomguard runs in, reads its limit and
``memory.oom.group``, and probes for real whether cgroups can be created below it (it
creates and removes one); the answer is an :class:`IsolationPlan`, with the reason and the
warnings a user should see. :class:`~oomguard.cgroups.workers.WorkerCgroups` builds the
workers' cgroups from a cgroup plan.

Every reader takes ``proc_root`` and ``cgroup_root`` so tests point it at fake trees.
``cgroup_root`` stands for ``/sys/fs/cgroup``: cgroup mounts found in mountinfo below
``/sys/fs/cgroup`` are looked up below ``cgroup_root`` instead.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from oomguard.cgroups import cgroup as cgroupfs  # tests replace its _mkdir, _rmdir
from oomguard.cgroups import v2
from oomguard.cgroups.cgroup import read_pids
from oomguard.cgroups.locate import DEFAULT_CGROUP_ROOT, locate_memory_cgroup, memory_limit_of
from oomguard.errors import IsolationError
from oomguard.procfs import process_start_time, read_int, read_text

#: The leaf a v2 scheduler moves itself into so its own cgroup has no processes and may
#: enable the memory controller for its children (the "no internal processes" rule).
SCHEDULER_LEAF = "oomguard-scheduler"


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
        cgroupfs._mkdir(probe)
    except OSError as err:
        return f"cannot create cgroups below {directory}: {err.strerror or err}"
    try:
        cgroupfs._rmdir(probe)
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
    subtree = v2.parse_controllers(read_text(directory / "cgroup.subtree_control") or "")
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
