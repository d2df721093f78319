"""The agent's cursor: how far into this boot's kernel log reports have been delivered.

A kill is identified by where its report starts: the ``/dev/kmsg`` sequence number of its
first record where the log gives one, else its time since boot (journal, files). The
cursor is written atomically (a temporary file renamed over ``--state``) after each
report is delivered, so a restart neither repeats a report nor misses one still in the
ring buffer. A cursor from another boot (``/proc/sys/kernel/random/boot_id``) is stale:
the agent then starts as if it had none and reports only ``--lookback``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from oomguard.errors import ConfigError

__all__ = ["Cursor", "boot_id", "load_cursor", "save_cursor"]


@dataclass(frozen=True)
class Cursor:
    """The last report delivered: its boot, its first record's sequence number (kmsg)
    and its time since boot in seconds (every source)."""

    boot_id: str
    seq: int | None = None
    stamp: float | None = None

    def is_past(self, seq: int | None, stamp: float | None) -> bool:
        """Whether a report starting at ``seq`` / ``stamp`` was delivered already."""
        if seq is not None and self.seq is not None:
            return seq <= self.seq
        if stamp is not None and self.stamp is not None:
            return stamp <= self.stamp
        return False


def boot_id(proc_root: str | os.PathLike[str] = "/proc") -> str:
    """This boot's id (``""`` where the kernel does not say)."""
    try:
        return (Path(proc_root) / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def load_cursor(path: str | os.PathLike[str]) -> Cursor | None:
    """The cursor in ``path``; None when there is none. A file that is not a cursor is
    a :class:`~oomguard.errors.ConfigError` (never silently a fresh start)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"--state {str(path)!r}: {err.strerror or err}") from None
    try:
        data = json.loads(text)
        boot = data["boot_id"]
        seq = data.get("seq")
        stamp = data.get("stamp")
        if not isinstance(boot, str) or not isinstance(seq, (int, type(None))):
            raise ValueError("bad types")
        if not isinstance(stamp, (int, float, type(None))):
            raise ValueError("bad stamp")
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"--state {str(path)!r} is not an agent cursor: {err}") from None
    return Cursor(boot, seq, None if stamp is None else float(stamp))


def save_cursor(path: str | os.PathLike[str], cursor: Cursor) -> None:
    """Write ``cursor`` to ``path`` atomically (and durably: fsync before the rename)."""
    target = Path(path)
    body = json.dumps({"boot_id": cursor.boot_id, "seq": cursor.seq, "stamp": cursor.stamp})
    fd, tmp = tempfile.mkstemp(prefix=".cursor-", dir=target.parent or Path("."))
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(body + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
