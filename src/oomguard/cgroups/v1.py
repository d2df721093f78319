"""Parsers for cgroup v1 memory controller files.

Pure functions over file contents (Documentation/admin-guide/cgroup-v1/memory.rst), shared
by :mod:`oomguard.cgroups.cgroup` and :mod:`oomguard.cgroups.info`.
"""

from __future__ import annotations

from oomguard.cgroups.v2 import parse_flat_keyed

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


def parse_oom_control(text: str) -> dict[str, int]:
    """Parse ``memory.oom_control``.

    Keys: ``oom_kill_disable``, ``under_oom`` and, on kernels >= 4.13, ``oom_kill``
    (the number of processes of *this* cgroup the OOM killer killed). A missing key is
    simply absent from the result; callers must not read a missing ``oom_kill`` as 0.
    """
    # The same "key value" lines as v2's flat keyed files.
    return parse_flat_keyed(text)
