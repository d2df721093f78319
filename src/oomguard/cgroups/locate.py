"""Where a process's memory cgroup is: cgroup mounts, ``/proc/PID/cgroup``, limits up the tree.

A process's memory cgroup is the v2 ``0::/path`` or the v1 memory hierarchy's path,
found below the mount that mountinfo names (never assumed at ``/sys/fs/cgroup/memory``;
bind-mounted container cgroups show only part of the tree). Every function takes
``proc_root`` and ``cgroup_root`` so tests use fake trees; ``cgroup_root`` stands for
``/sys/fs/cgroup``: mounts below ``/sys/fs/cgroup`` in mountinfo are looked up below
``cgroup_root`` instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from oomguard.cgroups import v1, v2
from oomguard.procfs import read_text

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")


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
            value = v2.read_max(level / "memory.max")
        else:
            value = v1.read_limit(level / "memory.limit_in_bytes")
        if value is not None:
            limits.append(value)
    return min(limits) if limits else None
