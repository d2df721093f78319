"""Reading memory cgroups: where a process's cgroup is, and what it and its ancestors say.

Read-only. Finds a process's memory cgroup (v2 ``0::/path`` or the v1 memory hierarchy,
located through mountinfo rather than assumed at ``/sys/fs/cgroup/memory``), and
:func:`inspect_cgroup` reports limit, usage, peak, OOM counters, ``memory.oom.group``,
swap limit and pressure for the cgroup and every ancestor, and which limit will be hit
first. Every function takes ``proc_root`` and ``cgroup_root`` so tests use fake trees;
``cgroup_root`` stands for ``/sys/fs/cgroup``: mounts below ``/sys/fs/cgroup`` in
mountinfo are looked up below ``cgroup_root`` instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from oomguard.cgroups import v1, v2

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")


# ------------------------------------------------------------------ small file helpers


def read_text(path: Path) -> str | None:
    """The text of a cgroup or /proc file, or ``None`` if it (or its cgroup) is gone."""
    try:
        return path.read_text()
    except OSError:
        # Gone (ENOENT), a cgroup being removed (ENODEV), or not ours to read (EACCES):
        # all read as "not available", which every caller reports as such.
        return None


def read_int(path: Path) -> int | None:
    """A file holding one integer, or ``None`` when absent or not a number."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def read_max(path: Path) -> int | None:
    """A v2 ``memory.max``-style file; ``"max"``, absent or unparsable -> ``None``."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return v2.parse_max(text)
    except ValueError:
        return None


def read_v1_limit(path: Path) -> int | None:
    """A v1 ``*limit_in_bytes`` file; the huge "unlimited" value or absent -> ``None``."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return v1.parse_limit(text)
    except ValueError:
        return None


def read_pids(path: Path) -> list[int]:
    """The pids listed in a ``cgroup.procs`` file (empty when it is gone)."""
    text = read_text(path)
    if text is None:
        return []
    return [int(word) for word in text.split() if word.isdigit()]


def process_start_time(pid: int, proc_root: Path = Path("/proc")) -> int | None:
    """The start time (clock ticks since boot) of ``pid``, or ``None`` if it is gone.

    ``(pid, start_time)`` names a process; a bare pid may have been reused.
    """
    text = read_text(proc_root / str(pid) / "stat")
    if text is None:
        return None
    # The command name may contain spaces and ")", so split after the last ")".
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


# ------------------------------------------------------------------- locating cgroups


@dataclass(frozen=True)
class CgroupMount:
    """One mounted cgroup hierarchy: where it is and which cgroup its root shows."""

    version: int  # 1 or 2
    mount_point: Path  # already moved below cgroup_root where it was below /sys/fs/cgroup
    root: str  # the cgroup path the mount shows at mount_point ("/" unless a bind mount)
    controllers: frozenset[str]  # v1 only: the controllers of the hierarchy


def parse_proc_cgroup(text: str) -> tuple[str | None, dict[str, str]]:
    """Parse ``/proc/<pid>/cgroup``: the v2 path (``0::/path``) and v1 paths by controller."""
    v2_path: str | None = None
    v1_paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier_id, controllers, path = parts
        if hier_id == "0" and controllers == "":
            v2_path = path
            continue
        for name in controllers.split(","):
            if name:
                v1_paths[name] = path
    return v2_path, v1_paths


def _unescape_mount(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _rebase(mount_point: str, cgroup_root: Path) -> Path:
    if cgroup_root == DEFAULT_CGROUP_ROOT:
        return Path(mount_point)
    rel = os.path.relpath(mount_point, str(DEFAULT_CGROUP_ROOT))
    if rel == ".":
        return cgroup_root
    if rel.startswith(".."):
        return cgroup_root / mount_point.lstrip("/")
    return cgroup_root / rel


def find_mounts(
    proc_root: Path = Path("/proc"),
    cgroup_root: Path = DEFAULT_CGROUP_ROOT,
    pid: int | None = None,
) -> list[CgroupMount]:
    """The cgroup hierarchies mounted in the mount namespace of ``pid`` (default: self).

    Reads ``mountinfo`` (it has the root of each mount, which bind-mounted container
    cgroups need), else ``/proc/self/mounts``. Where neither exists (a bare fake tree),
    the conventional layout below ``cgroup_root`` is assumed.
    """
    mounts: list[CgroupMount] = []
    who = str(pid) if pid is not None else "self"
    info = read_text(proc_root / who / "mountinfo") or read_text(proc_root / "self" / "mountinfo")
    if info is not None:
        for line in info.splitlines():
            pre, sep, post = line.partition(" - ")
            if not sep:
                continue
            left, right = pre.split(), post.split()
            if len(left) < 5 or len(right) < 3:
                continue
            fstype, options = right[0], right[2]
            root, mount_point = _unescape_mount(left[3]), _unescape_mount(left[4])
            if fstype == "cgroup2":
                mounts.append(CgroupMount(2, _rebase(mount_point, cgroup_root), root, frozenset()))
            elif fstype == "cgroup":
                mounts.append(
                    CgroupMount(
                        1,
                        _rebase(mount_point, cgroup_root),
                        root,
                        frozenset(options.split(",")),
                    )
                )
        return mounts
    plain = read_text(proc_root / "self" / "mounts")
    if plain is not None:
        for line in plain.splitlines():
            parts = line.split()
            if len(parts) < 4:
                continue
            mount_point, fstype, options = _unescape_mount(parts[1]), parts[2], parts[3]
            if fstype == "cgroup2":
                mounts.append(CgroupMount(2, _rebase(mount_point, cgroup_root), "/", frozenset()))
            elif fstype == "cgroup":
                mounts.append(
                    CgroupMount(
                        1, _rebase(mount_point, cgroup_root), "/", frozenset(options.split(","))
                    )
                )
        return mounts
    if (cgroup_root / "cgroup.controllers").exists():
        mounts.append(CgroupMount(2, cgroup_root, "/", frozenset()))
    elif (cgroup_root / "unified" / "cgroup.controllers").exists():
        mounts.append(CgroupMount(2, cgroup_root / "unified", "/", frozenset()))
    if (cgroup_root / "memory").is_dir():
        mounts.append(CgroupMount(1, cgroup_root / "memory", "/", frozenset({"memory"})))
    return mounts


def resolve_dir(mount: CgroupMount, cgroup_path: str) -> Path | None:
    """The directory of ``cgroup_path`` (as in /proc/<pid>/cgroup) below ``mount``."""
    root = mount.root.rstrip("/") or "/"
    if root == "/":
        rel = cgroup_path.lstrip("/")
    elif cgroup_path == root or cgroup_path.startswith(root + "/"):
        rel = cgroup_path[len(root) :].lstrip("/")
    else:
        # The mount shows another part of the tree than we live in (an unusual bind
        # mount): the path may still be visible below it, else we cannot reach it.
        candidate = mount.mount_point / cgroup_path.lstrip("/")
        return candidate if candidate.is_dir() else None
    return mount.mount_point / rel if rel else mount.mount_point


def ancestors(directory: Path, top: Path) -> Iterator[Path]:
    """``directory`` and its parents up to and including ``top`` (the mount point)."""
    current = directory
    while True:
        yield current
        if current == top or top not in current.parents:
            return
        current = current.parent


def locate_memory_cgroup(
    proc_root: Path = Path("/proc"),
    cgroup_root: Path = DEFAULT_CGROUP_ROOT,
    pid: int | None = None,
) -> tuple[int, Path, Path, str] | tuple[None, None, None, str]:
    """Find the memory cgroup of ``pid``: ``(version, directory, mount point, reason)``.

    v2 is preferred where its own cgroup lists the memory controller; else v1's memory
    hierarchy. On failure the version is ``None`` and ``reason`` says why.
    """
    who = str(pid) if pid is not None else "self"
    text = read_text(proc_root / who / "cgroup")
    if text is None:
        return None, None, None, f"cannot read {proc_root / who / 'cgroup'}"
    v2_path, v1_paths = parse_proc_cgroup(text)
    mounts = find_mounts(proc_root, cgroup_root, pid)
    reasons: list[str] = []
    if v2_path is not None:
        for mount in (m for m in mounts if m.version == 2):
            directory = resolve_dir(mount, v2_path)
            if directory is None:
                continue
            ctrl = read_text(directory / "cgroup.controllers")
            if ctrl is not None and "memory" in v2.parse_controllers(ctrl):
                return 2, directory, mount.mount_point, f"cgroup v2 at {directory}"
            reasons.append(f"cgroup v2 memory controller not available in {directory}")
    if "memory" in v1_paths:
        for mount in (m for m in mounts if m.version == 1 and "memory" in m.controllers):
            directory = resolve_dir(mount, v1_paths["memory"])
            if directory is not None and directory.is_dir():
                return 1, directory, mount.mount_point, f"cgroup v1 at {directory}"
        reasons.append("cgroup v1 memory hierarchy not mounted where it can be reached")
    return None, None, None, "; ".join(reasons) or "no memory cgroup found"


def memory_limit_of(directory: Path, top: Path, version: int) -> int | None:
    """The smallest memory limit of ``directory`` and its ancestors up to ``top``."""
    limits: list[int] = []
    for level in ancestors(directory, top):
        if version == 2:
            value = read_max(level / "memory.max")
        else:
            value = read_v1_limit(level / "memory.limit_in_bytes")
        if value is not None:
            limits.append(value)
    return min(limits) if limits else None


def machine_memory_bytes(proc_root: Path = Path("/proc")) -> int | None:
    """``MemTotal`` from ``/proc/meminfo`` in bytes."""
    return meminfo(proc_root).get("MemTotal")


def meminfo(proc_root: Path = Path("/proc")) -> dict[str, int]:
    """``/proc/meminfo`` as bytes by key (values given in kB are converted)."""
    result: dict[str, int] = {}
    for line in (read_text(proc_root / "meminfo") or "").splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts or not parts[0].isdigit():
            continue
        scale = 1024 if len(parts) > 1 and parts[1] == "kB" else 1
        result[key.strip()] = int(parts[0]) * scale
    return result


# --------------------------------------------------------------------- the inspector


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
            limit_bytes=read_max(directory / "memory.max"),
            usage_bytes=read_int(directory / "memory.current"),
            peak_bytes=read_int(directory / "memory.peak"),
            swap_limit_bytes=read_max(directory / "memory.swap.max"),
            high_bytes=read_max(directory / "memory.high"),
            oom_group=None if oom_group is None else oom_group == 1,
            events={k: v for k, v in events.items() if k in v2.EVENT_KEYS},
            pressure=v2.parse_pressure(pressure_text) if pressure_text else None,
        )
    control = v1.parse_oom_control(read_text(directory / "memory.oom_control") or "")
    limit = read_v1_limit(directory / "memory.limit_in_bytes")
    memsw = read_v1_limit(directory / "memory.memsw.limit_in_bytes")
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
