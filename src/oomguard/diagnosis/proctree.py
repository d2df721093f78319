"""The process tree as the OOM killer sees it, read from ``/proc``.

Every reader takes ``proc_root`` (psutil's ``get_procfs_path`` idea) so that tests can
point it at a fake ``/proc`` in a temporary directory; the files themselves are read by
:mod:`oomguard.procfs`. A process is identified by ``(pid, start_time)``: pids are
reused, start times (field 22 of ``/proc/PID/stat``, in clock ticks since boot) tell two
holders of one pid apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from oomguard import procfs
from oomguard.cgroups.locate import parse_proc_cgroup
from oomguard.procfs import parse_stat

__all__ = [
    "ProcInfo",
    "build_tree",
    "likely_victims",
    "parse_memcg",
    "parse_stat",
    "read_process",
    "walk_tree",
]

#: oom_score_adj that exempts a process from the OOM killer.
OOM_SCORE_ADJ_MIN = -1000
#: How many likely victims to mark: the kernel's first choice (the highest oom_score).
LIKELY_VICTIMS = 1
_PF_KTHREAD = 0x00200000  # task flag (stat field 9) of kernel threads


@dataclass(frozen=True)
class ProcInfo:
    """One process, with what decides whether the OOM killer picks it."""

    pid: int
    ppid: int
    start_time: int
    comm: str
    oom_score: int | None
    oom_score_adj: int | None
    rss_bytes: int | None
    memcg: str | None
    cmdline: tuple[str, ...] = ()
    kernel_thread: bool = False
    likely_victim: bool = False
    children: tuple[int, ...] = field(default=(), compare=False)

    @property
    def ident(self) -> tuple[int, int]:
        """``(pid, start_time)``: a process identity that survives pid reuse."""
        return (self.pid, self.start_time)

    def to_json(self) -> dict[str, object]:
        """The process as a JSON-ready dict."""
        return {
            "pid": self.pid,
            "ppid": self.ppid,
            "start_time": self.start_time,
            "comm": self.comm,
            "oom_score": self.oom_score,
            "oom_score_adj": self.oom_score_adj,
            "rss_bytes": self.rss_bytes,
            "memcg": self.memcg,
            "cmdline": list(self.cmdline),
            "kernel_thread": self.kernel_thread,
            "likely_victim": self.likely_victim,
        }


def parse_memcg(text: str) -> str | None:
    """The memory cgroup path from ``/proc/PID/cgroup``: the v1 ``memory`` line, else v2."""
    unified, v1_paths = parse_proc_cgroup(text)
    return v1_paths.get("memory", unified)


def read_process(pid: int, proc_root: str | Path = "/proc") -> ProcInfo | None:
    """Read one process; ``None`` when it vanished (or is unreadable) meanwhile."""
    base = Path(proc_root) / str(pid)
    stat = procfs.read_stat(pid, proc_root)
    if stat is None:
        return None  # gone while we looked, or not a process directory
    comm, ppid, flags, start_time = stat
    cgroup_text = procfs.read_text(base / "cgroup")
    memcg = None if cgroup_text is None else parse_memcg(cgroup_text)
    return ProcInfo(
        pid=pid,
        ppid=ppid,
        start_time=start_time,
        comm=comm,
        oom_score=procfs.oom_score(pid, proc_root),
        oom_score_adj=procfs.oom_score_adj(pid, proc_root),
        rss_bytes=procfs.rss_bytes(pid, proc_root),
        memcg=memcg,
        cmdline=procfs.cmdline(pid, proc_root),
        kernel_thread=bool(flags & _PF_KTHREAD),
    )


def likely_victims(procs: dict[int, ProcInfo], count: int = LIKELY_VICTIMS) -> list[int]:
    """Pids the OOM killer would pick first: highest ``oom_score``, exempt ones skipped."""
    candidates = [
        p
        for p in procs.values()
        if p.oom_score is not None
        and p.oom_score > 0
        and p.oom_score_adj != OOM_SCORE_ADJ_MIN
        and not p.kernel_thread
    ]
    candidates.sort(key=lambda p: (-(p.oom_score or 0), -(p.rss_bytes or 0), p.pid))
    return [p.pid for p in candidates[:count]]


def build_tree(
    proc_root: str | Path = "/proc", *, kernel_threads: bool = False
) -> dict[int, ProcInfo]:
    """Every process under ``proc_root`` by pid, children linked, likely victims marked.

    Processes that exit while the tree is read are left out.
    """
    root = Path(proc_root)
    procs: dict[int, ProcInfo] = {}
    try:
        names = os.listdir(root)
    except OSError:
        return procs
    for name in names:
        if not name.isdigit():
            continue
        info = read_process(int(name), root)
        if info is None or (info.kernel_thread and not kernel_threads):
            continue
        procs[info.pid] = info
    children: dict[int, list[int]] = {}
    for info in procs.values():
        if info.ppid in procs and info.ppid != info.pid:
            children.setdefault(info.ppid, []).append(info.pid)
    victims = set(likely_victims(procs))
    return {
        pid: replace(
            info,
            children=tuple(sorted(children.get(pid, ()))),
            likely_victim=pid in victims,
        )
        for pid, info in sorted(procs.items())
    }


def walk_tree(procs: dict[int, ProcInfo]) -> Iterator[tuple[int, ProcInfo]]:
    """Depth-first ``(depth, process)`` pairs, roots (parent not in the tree) first."""
    roots = [p for p in procs.values() if p.ppid not in procs or p.ppid == p.pid]
    stack = [(0, p) for p in sorted(roots, key=lambda p: p.pid, reverse=True)]
    seen: set[int] = set()
    while stack:
        depth, proc = stack.pop()
        if proc.pid in seen:
            continue  # a cycle can only come from a fake or racing /proc; do not loop
        seen.add(proc.pid)
        yield depth, proc
        for child in reversed(proc.children):
            if child in procs:
                stack.append((depth + 1, procs[child]))
