"""The cgroup v1 memory controller files: their parsers, and the reader of limits.

Pure functions over file contents (Documentation/admin-guide/cgroup-v1/memory.rst), and
:func:`read_limit`, shared by :mod:`oomguard.cgroups.cgroup`, :mod:`oomguard.cgroups.locate`
and :mod:`oomguard.cgroups.info`.
"""

from __future__ import annotations

from pathlib import Path

from oomguard.cgroups.v2 import parse_flat_keyed
from oomguard.procfs import read_text

#: v1 reports "no limit" as PAGE_COUNTER_MAX pages in bytes (9223372036854771712 with
#: 4 KiB pages, a different number with 16/64 KiB pages). Anything at or above 2**62
#: bytes (4 EiB) cannot be a limit somebody set on purpose, so it reads as unlimited.
UNLIMITED_THRESHOLD = 1 << 62


def parse_limit(text: str) -> int | None:
    """Parse ``memory.limit_in_bytes`` (or ``memsw``): the huge "unlimited" value -> None."""
    value = int(text.strip())
    if value < 0 or value >= UNLIMITED_THRESHOLD:
        return None
    return value


def read_limit(path: Path) -> int | None:
    """A ``*limit_in_bytes`` file; the huge "unlimited" value, absent or unparsable -> None."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return parse_limit(text)
    except ValueError:
        return None


def parse_oom_control(text: str) -> dict[str, int]:
    """Parse ``memory.oom_control``.

    Keys: ``oom_kill_disable``, ``under_oom`` and, on kernels >= 4.13, ``oom_kill``
    (the number of processes of *this* cgroup the OOM killer killed). A missing key is
    simply absent from the result; callers must not read a missing ``oom_kill`` as 0.
    """
    # The same "key value" lines as v2's flat keyed files.
    return parse_flat_keyed(text)
