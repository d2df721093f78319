"""The kernel log: reading it, and the OOM-killer reports in it.

:mod:`~oomguard.kernlog.sources` reads ``/dev/kmsg``, ``dmesg``, ``journalctl -k`` or a
file; :mod:`~oomguard.kernlog.kmsg` decodes ``/dev/kmsg`` records;
:mod:`~oomguard.kernlog.formats` strips what log readers add and knows the kernel's
message formats; :mod:`~oomguard.kernlog.parser` groups lines into
:class:`~oomguard.kernlog.event.OomEvent` records; :mod:`~oomguard.kernlog.watch` tails
the log for the scheduler. This package uses no other part of oomguard but its errors.
"""

from __future__ import annotations

from oomguard.kernlog.event import JSON_KEYS, OomEvent, event_from_json
from oomguard.kernlog.formats import normalize_line
from oomguard.kernlog.parser import OomLogParser, parse_lines, parse_text
from oomguard.kernlog.sources import KernelLogFollower, iter_source_lines

__all__ = [
    "JSON_KEYS",
    "KernelLogFollower",
    "OomEvent",
    "OomLogParser",
    "event_from_json",
    "iter_source_lines",
    "normalize_line",
    "parse_lines",
    "parse_text",
]
