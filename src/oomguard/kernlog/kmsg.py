"""The ``/dev/kmsg`` record format: ``prio,seq,usec,flags;text``, with ``\\xNN`` escapes.

One record per ``read()`` from the device; the text is followed by ``" KEY=VALUE"``
dictionary lines (``Documentation/ABI/testing/dev-kmsg``). The kernel escapes every byte
outside printable ASCII, newline included, as ``\\xNN``, so a UTF-8 process name (a comm
in Chinese) arrives as several escapes: :func:`unescape` undoes them as bytes, then
decodes. Both the device reader (:mod:`oomguard.kernlog.sources`) and the line splitter
for saved records (:mod:`oomguard.kernlog.formats`) decode records here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["KmsgRecord", "is_dictionary_line", "parse_record", "unescape"]

_ESCAPE_RE = re.compile(rb"\\x([0-9a-fA-F]{2})")
_RECORD_RE = re.compile(r"^(\d+),(\d+),(\d+),([^;\n]*);([^\n]*)")
_DICT_RE = re.compile(r"^ [A-Z_][A-Z0-9_]*=")


@dataclass(frozen=True)
class KmsgRecord:
    """One ``/dev/kmsg`` record: its header fields and its text, escapes undone."""

    prio: int  # facility * 8 + level
    seq: int
    usec: int  # time since boot in microseconds
    flags: str
    text: str  # may hold newlines the kernel escaped as \x0a

    @property
    def stamp(self) -> float:
        """The record's time since boot in seconds."""
        return self.usec / 1_000_000


def unescape(text: str | bytes) -> str:
    """Undo ``/dev/kmsg``'s ``\\xNN`` escapes; the bytes they stand for may be UTF-8."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    if b"\\x" in raw:
        raw = _ESCAPE_RE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    return raw.decode("utf-8", "replace")


def parse_record(record: str | bytes) -> KmsgRecord | None:
    """Parse one record (its dictionary lines, if still attached, are dropped).

    ``None`` when ``record`` is not a record (no ``prio,seq,usec,flags;`` header).
    """
    text = record.decode("utf-8", "replace") if isinstance(record, bytes) else record
    m = _RECORD_RE.match(text)
    if m is None:
        return None
    return KmsgRecord(
        prio=int(m.group(1)),
        seq=int(m.group(2)),
        usec=int(m.group(3)),
        flags=m.group(4),
        text=unescape(m.group(5)),
    )


def is_dictionary_line(line: str) -> bool:
    """Whether ``line`` is one of the ``" KEY=VALUE"`` lines that follow a record."""
    return _DICT_RE.match(line) is not None
