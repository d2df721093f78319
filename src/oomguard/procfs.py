"""Reading ``/proc``: the one place oomguard reads a process's or the machine's files.

Every reader takes ``procfs_path`` (psutil's ``get_procfs_path`` idea), so tests point it
at a fake ``/proc`` built in a temporary directory. Readers return ``None`` (or an empty
result) when a file is gone, unreadable or not what the kernel writes: a process may exit
while it is being read, and every caller reports "not available" as such.

:func:`read_text` and :func:`read_int` are the small-file readers shared by every
kernel pseudo-file oomguard reads, cgroupfs included (:mod:`oomguard.cgroups`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

__all__ = [
    "PROCFS_PATH",
    "cap_eff",
    "children",
    "cmdline",
    "machine_memory_bytes",
    "meminfo",
    "oom_score",
    "oom_score_adj",
    "page_size",
    "parse_stat",
    "process_start_time",
    "process_state",
    "raise_oom_score_adj",
    "read_int",
    "read_stat",
    "read_text",
    "rss_bytes",
    "status",
    "tree_rss",
]

PROCFS_PATH = Path("/proc")

#: A process: a pid, or ``"self"`` for the calling process.
Pid = int | str


# ------------------------------------------------------------------ small file helpers


def read_text(path: Path) -> str | None:
    """The text of a ``/proc`` or cgroup file, or ``None`` if it (or its owner) is gone."""
    try:
        # A process name or a cgroup path may hold any bytes: never fail on decoding.
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        # Gone (ENOENT, ESRCH), a cgroup being removed (ENODEV), or not ours to read
        # (EACCES): all read as "not available".
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


@functools.cache
def page_size() -> int:
    """The size of a memory page in bytes (``statm`` counts pages)."""
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4096


def _dir(pid: Pid, procfs_path: str | os.PathLike[str]) -> Path:
    return Path(procfs_path) / str(pid)


# ------------------------------------------------------------------ one process


def parse_stat(text: str) -> tuple[str, int, int, int]:
    """Return ``(comm, ppid, flags, start_time)`` from a ``/proc/PID/stat`` line.

    The name sits in parentheses and may itself contain spaces and parentheses, so the
    fields are split after the *last* ``)``. ``start_time`` is field 22, in clock ticks
    since boot. Raises :class:`ValueError` (or :class:`IndexError`) on a cut line.
    """
    open_ = text.index("(")
    close = text.rindex(")")
    comm = text[open_ + 1 : close]
    rest = text[close + 2 :].split()
    # rest[0] is field 3 (state): field N is rest[N - 3].
    return comm, int(rest[1]), int(rest[6]), int(rest[19])


def read_stat(
    pid: Pid, procfs_path: str | os.PathLike[str] = PROCFS_PATH
) -> tuple[str, int, int, int] | None:
    """:func:`parse_stat` of ``/proc/PID/stat``, or ``None`` when the process is gone."""
    text = read_text(_dir(pid, procfs_path) / "stat")
    if text is None:
        return None
    try:
        return parse_stat(text)
    except (ValueError, IndexError):
        return None


def process_state(pid: Pid, procfs_path: str | os.PathLike[str] = PROCFS_PATH) -> str | None:
    """The one-letter state of ``pid`` (``R``, ``S``, ``Z`` ...), or ``None`` if it is gone."""
    text = read_text(_dir(pid, procfs_path) / "stat")
    if text is None:
        return None
    rest = text[text.rfind(")") + 2 :]
    return rest[:1] or None


def process_start_time(pid: Pid, procfs_path: str | os.PathLike[str] = PROCFS_PATH) -> int | None:
    """The start time (clock ticks since boot) of ``pid``, or ``None`` if it is gone.

    ``(pid, start_time)`` names a process; a bare pid may have been reused.
    """
    stat = read_stat(pid, procfs_path)
    return None if stat is None else stat[3]


def rss_bytes(pid: Pid = "self", procfs_path: str | os.PathLike[str] = PROCFS_PATH) -> int | None:
    """Resident memory of ``pid`` in bytes (``/proc/PID/statm``), ``None`` when gone."""
    text = read_text(_dir(pid, procfs_path) / "statm")
    if text is None:
        return None
    try:
        return int(text.split()[1]) * page_size()
    except (IndexError, ValueError):
        return None


def cmdline(pid: Pid, procfs_path: str | os.PathLike[str] = PROCFS_PATH) -> tuple[str, ...]:
    """The arguments of ``pid`` (``/proc/PID/cmdline``); empty for kernel threads or gone."""
    try:
        raw = (_dir(pid, procfs_path) / "cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(a.decode("utf-8", "replace") for a in raw.split(b"\0") if a)


def oom_score(pid: Pid, procfs_path: str | os.PathLike[str] = PROCFS_PATH) -> int | None:
    """``/proc/PID/oom_score``: the badness the OOM killer would give the process now."""
    return read_int(_dir(pid, procfs_path) / "oom_score")


def oom_score_adj(pid: Pid, procfs_path: str | os.PathLike[str] = PROCFS_PATH) -> int | None:
    """``/proc/PID/oom_score_adj`` (-1000 exempts the process from the OOM killer)."""
    return read_int(_dir(pid, procfs_path) / "oom_score_adj")


def status(pid: Pid, procfs_path: str | os.PathLike[str] = PROCFS_PATH) -> dict[str, str]:
    """``/proc/PID/status`` as ``{key: value}`` (values stripped); empty when gone."""
    result: dict[str, str] = {}
    for line in (read_text(_dir(pid, procfs_path) / "status") or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            result[key] = value.strip()
    return result


def cap_eff(pid: Pid, procfs_path: str | os.PathLike[str] = PROCFS_PATH) -> int | None:
    """The effective capability mask (``CapEff`` of ``/proc/PID/status``), if readable."""
    value = status(pid, procfs_path).get("CapEff")
    if value is None:
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None


def children(pid: Pid, procfs_path: str | os.PathLike[str] = PROCFS_PATH) -> list[int]:
    """The child processes of ``pid``, from each of its threads' ``children`` file
    (``/proc/PID/task/TID/children``); empty when it is gone."""
    tasks = _dir(pid, procfs_path) / "task"
    try:
        threads = os.listdir(tasks)
    except OSError:
        return []
    found: list[int] = []
    for tid in threads:
        text = read_text(tasks / tid / "children") or ""
        found.extend(int(word) for word in text.split() if word.isdigit())
    return found


def tree_rss(pid: int, procfs_path: str | os.PathLike[str] = PROCFS_PATH) -> int:
    """RSS of ``pid`` and all its descendants, in bytes (0 if it is gone)."""
    total = 0
    todo, seen = [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        rss = rss_bytes(current, procfs_path)
        if rss is None:
            if current == pid:
                return 0
            continue  # exited meanwhile
        total += rss
        todo.extend(children(current, procfs_path))
    return total


def raise_oom_score_adj(
    value: int, pid: Pid = "self", procfs_path: str | os.PathLike[str] = PROCFS_PATH
) -> None:
    """Raise ``pid``'s ``oom_score_adj`` to ``value``; never lower it (raising needs no
    privilege; lowering does, and is never what oomguard wants). :class:`OSError` or
    :class:`ValueError` when it cannot be read or written."""
    path = _dir(pid, procfs_path) / "oom_score_adj"
    if value > int(path.read_text().strip()):
        path.write_text(str(value))


# ------------------------------------------------------------------ the machine


def meminfo(procfs_path: str | os.PathLike[str] = PROCFS_PATH) -> dict[str, int]:
    """``/proc/meminfo`` as bytes by key (values given in kB are converted)."""
    result: dict[str, int] = {}
    for line in (read_text(Path(procfs_path) / "meminfo") or "").splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts or not parts[0].isdigit():
            continue
        scale = 1024 if len(parts) > 1 and parts[1] == "kB" else 1
        result[key.strip()] = int(parts[0]) * scale
    return result


def machine_memory_bytes(procfs_path: str | os.PathLike[str] = PROCFS_PATH) -> int | None:
    """The machine's memory: ``MemTotal`` of ``/proc/meminfo`` in bytes, if readable.

    The one definition of "the machine's memory": the scheduler's budget, ``oomguard
    doctor`` and ``oomguard oom cgroup`` all use it.
    """
    return meminfo(procfs_path).get("MemTotal")
