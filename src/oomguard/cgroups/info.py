"""Inspecting a memory cgroup: what it and every ancestor say about memory.

Read-only. :func:`inspect_cgroup` reports limit, usage, peak, OOM counters,
``memory.oom.group``, swap limit and pressure for the cgroup and every ancestor, and
which limit will be hit first (``oomguard oom cgroup``). Finding the cgroup is
:mod:`oomguard.cgroups.locate`'s. Every function takes ``proc_root`` and ``cgroup_root``
so tests use fake trees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from oomguard.cgroups import v1, v2
from oomguard.cgroups.locate import (
    DEFAULT_CGROUP_ROOT,
    ancestors,
    find_mounts,
    locate_memory_cgroup,
    resolve_dir,
)
from oomguard.procfs import machine_memory_bytes, read_int, read_text


@dataclass(frozen=True)
class CgroupLevel:
    """What one cgroup (the inspected one or an ancestor) says about memory."""

    path: str  # the cgroup path, as in /proc/<pid>/cgroup ("/" for the root)
    directory: Path
    limit_bytes: int | None  # None: no limit at this level
    usage_bytes: int | None
    peak_bytes: int | None
    swap_limit_bytes: int | None  # v2 memory.swap.max, v1 memsw limit minus the limit
    high_bytes: int | None  # v2 memory.high (throttling, not a kill)
    oom_group: bool | None  # v2 memory.oom.group
    events: dict[str, int]  # v2 memory.events; v1: oom_kill and under_oom from oom_control
    pressure: dict[str, dict[str, float]] | None  # v2 memory.pressure; v1: None

    @property
    def headroom_bytes(self) -> int | None:
        """Bytes left before this level's limit, ``None`` without a limit."""
        if self.limit_bytes is None:
            return None
        return self.limit_bytes - (self.usage_bytes or 0)

    def to_json(self) -> dict[str, object]:
        """The level as a JSON-ready dict."""
        return {
            "path": self.path,
            "directory": str(self.directory),
            "limit_bytes": self.limit_bytes,
            "usage_bytes": self.usage_bytes,
            "peak_bytes": self.peak_bytes,
            "headroom_bytes": self.headroom_bytes,
            "swap_limit_bytes": self.swap_limit_bytes,
            "high_bytes": self.high_bytes,
            "oom_group": self.oom_group,
            "events": dict(self.events),
            "pressure": self.pressure,
        }


@dataclass(frozen=True)
class CgroupInfo:
    """A memory cgroup and its ancestors up to the root, innermost first."""

    version: int
    pid: int | None
    levels: tuple[CgroupLevel, ...]
    machine_memory_bytes: int | None
    notes: tuple[str, ...]

    @property
    def hits_first(self) -> CgroupLevel | None:
        """The level whose limit is reached first as the cgroup grows (least headroom).

        Every byte charged to the cgroup is also charged to each ancestor, so the level
        with the least room left, not the smallest limit, is the one that OOMs first.
        ``None`` when no level has a limit (then the machine's memory is the limit).
        """
        limited = [level for level in self.levels if level.headroom_bytes is not None]
        if not limited:
            return None
        return min(limited, key=lambda level: level.headroom_bytes or 0)

    @property
    def smallest_limit(self) -> CgroupLevel | None:
        """The level with the smallest limit (the effective limit of the cgroup)."""
        limited = [level for level in self.levels if level.limit_bytes is not None]
        return min(limited, key=lambda level: level.limit_bytes or 0) if limited else None

    def to_json(self) -> dict[str, object]:
        """The whole report as a JSON-ready dict."""
        first = self.hits_first
        smallest = self.smallest_limit
        return {
            "version": self.version,
            "pid": self.pid,
            "cgroup": self.levels[0].path if self.levels else None,
            "levels": [level.to_json() for level in self.levels],
            "hits_first": first.path if first is not None else "machine",
            "smallest_limit": smallest.path if smallest is not None else None,
            "machine_memory_bytes": self.machine_memory_bytes,
            "notes": list(self.notes),
        }


def _read_level(directory: Path, top: Path, mount_root: str, version: int) -> CgroupLevel:
    rel = directory.relative_to(top).as_posix()
    base = mount_root.rstrip("/")
    path = f"{base}/{rel}" if rel != "." else (base or "/")
    if version == 2:
        events_text = read_text(directory / "memory.events")
        events = v2.parse_flat_keyed(events_text or "")
        pressure_text = read_text(directory / "memory.pressure")
        oom_group = read_int(directory / "memory.oom.group")
        return CgroupLevel(
            path=path,
            directory=directory,
            limit_bytes=v2.read_max(directory / "memory.max"),
            usage_bytes=read_int(directory / "memory.current"),
            peak_bytes=read_int(directory / "memory.peak"),
            swap_limit_bytes=v2.read_max(directory / "memory.swap.max"),
            high_bytes=v2.read_max(directory / "memory.high"),
            oom_group=None if oom_group is None else oom_group == 1,
            events={k: v for k, v in events.items() if k in v2.EVENT_KEYS},
            pressure=v2.parse_pressure(pressure_text) if pressure_text else None,
        )
    control = v1.parse_oom_control(read_text(directory / "memory.oom_control") or "")
    limit = v1.read_limit(directory / "memory.limit_in_bytes")
    memsw = v1.read_limit(directory / "memory.memsw.limit_in_bytes")
    swap: int | None = None
    if memsw is not None and limit is not None:
        swap = max(memsw - limit, 0)  # memsw counts memory + swap together
    return CgroupLevel(
        path=path,
        directory=directory,
        limit_bytes=limit,
        usage_bytes=read_int(directory / "memory.usage_in_bytes"),
        peak_bytes=read_int(directory / "memory.max_usage_in_bytes"),
        swap_limit_bytes=swap,
        high_bytes=None,
        oom_group=None,
        events={k: v for k, v in control.items() if k in ("oom_kill", "under_oom")},
        pressure=None,
    )


def inspect_cgroup(
    target: int | str | Path | None = None,
    *,
    proc_root: Path = Path("/proc"),
    cgroup_root: Path = DEFAULT_CGROUP_ROOT,
) -> CgroupInfo:
    """Read the memory cgroup of a process, or a cgroup given by path, and its ancestors.

    ``target``: ``None`` (the current process), a pid (int or digits), a directory of a
    cgroup filesystem, or a cgroup path as shown in ``/proc/<pid>/cgroup``. Raises
    :class:`LookupError` with the reason when no memory cgroup can be found.
    """
    pid: int | None = None
    if target is None:
        pid = os.getpid()
    elif isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        pid = int(target)
    if pid is not None:
        if not (proc_root / str(pid)).is_dir():
            raise LookupError(f"no process {pid}")
        version, directory, top, why = locate_memory_cgroup(proc_root, cgroup_root, pid)
        if version is None or directory is None or top is None:
            raise LookupError(why)
    else:
        version, directory, top = _locate_path(Path(str(target)), proc_root, cgroup_root)
    mount_root = "/"
    for mount in find_mounts(proc_root, cgroup_root, pid):
        if mount.mount_point == top:
            mount_root = mount.root
    levels = tuple(_read_level(d, top, mount_root, version) for d in ancestors(directory, top))
    notes: list[str] = []
    if version == 1:
        notes.append(
            "cgroup v1 has no per-cgroup memory pressure (PSI) and no memory.oom.group; "
            "oom_kill is counted only on the cgroup of the killed process"
        )
    if version == 2 and levels and levels[-1].limit_bytes is None and len(levels) > 1:
        notes.append("the root cgroup has no memory limit: the machine's memory is the last one")
    return CgroupInfo(version, pid, levels, machine_memory_bytes(proc_root), tuple(notes))


def _locate_path(path: Path, proc_root: Path, cgroup_root: Path) -> tuple[int, Path, Path]:
    mounts = [
        m
        for m in find_mounts(proc_root, cgroup_root)
        if m.version == 2 or "memory" in m.controllers
    ]
    # A filesystem directory below a mount, or a cgroup path relative to a mount.
    for mount in mounts:
        if path.is_absolute() and (path == mount.mount_point or mount.mount_point in path.parents):
            if not path.is_dir():
                raise LookupError(f"no cgroup directory {path}")
            return mount.version, path, mount.mount_point
    for mount in mounts:
        directory = resolve_dir(mount, "/" + path.as_posix().lstrip("/"))
        if directory is None or not directory.is_dir():
            continue
        if (
            mount.version == 1
            or (directory / "memory.current").exists()
            or (directory == mount.mount_point)
        ):
            return mount.version, directory, mount.mount_point
    raise LookupError(f"{path} is neither a memory cgroup directory nor a cgroup path")
