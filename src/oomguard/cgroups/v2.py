"""The cgroup v2 memory interface files: their parsers, and the reader of ``max`` values.

Pure functions over file contents (and :func:`read_max`, which reads one file), so
:mod:`oomguard.cgroups.cgroup`, :mod:`oomguard.cgroups.locate` and the inspector in
:mod:`oomguard.cgroups.info` share one interpretation of the kernel's formats
(Documentation/admin-guide/cgroup-v2.rst).
"""

from __future__ import annotations

from pathlib import Path

from oomguard.procfs import read_text

#: memory.events keys oomguard reports; all are hierarchical (they count events in the
#: cgroup *and its descendants*), unlike memory.events.local.
EVENT_KEYS: tuple[str, ...] = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")


def parse_max(text: str) -> int | None:
    """Parse a ``memory.max``-style value: ``"max"`` means no limit (``None``)."""
    value = text.strip()
    if value == "max":
        return None
    return int(value)


def read_max(path: Path) -> int | None:
    """A ``memory.max``-style file; ``"max"``, absent or unparsable -> ``None``."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return parse_max(text)
    except ValueError:
        return None


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse a flat-keyed file such as ``memory.events`` (``key value`` per line).

    Lines that do not parse are skipped: newer kernels add keys, and a file read while
    the cgroup is being removed may come back cut.
    """
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            result[parts[0]] = int(parts[1])
        except ValueError:
            continue
    return result


def parse_controllers(text: str) -> frozenset[str]:
    """Parse ``cgroup.controllers`` / ``cgroup.subtree_control`` (space separated names).

    A leading ``+`` is dropped so a file written by a test (``"+memory"``) reads like
    the kernel's own rendering (``"memory"``).
    """
    return frozenset(word.lstrip("+") for word in text.split() if not word.startswith("-"))


def parse_pressure(text: str) -> dict[str, dict[str, float]]:
    """Parse a PSI file (``memory.pressure`` or ``/proc/pressure/memory``).

    Returns ``{"some": {"avg10": ..., "avg60": ..., "avg300": ..., "total": ...},
    "full": {...}}``; lines that do not parse are skipped.
    """
    result: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        values: dict[str, float] = {}
        for item in parts[1:]:
            key, sep, raw = item.partition("=")
            if not sep:
                continue
            try:
                values[key] = float(raw)
            except ValueError:
                continue
        result[parts[0]] = values
    return result
