"""Reading kills as they happen: kernel log sources with positions, and the OOM reports
in them as :class:`SeenKill` records.

Sources: ``/dev/kmsg`` (each record with its sequence number: the cursor), ``journalctl
-k -o json`` (journald keeps the kernel log when ``/dev/kmsg`` cannot be read), or a log
file (tailed). Lines go through the existing parser
(:class:`~oomguard.kernlog.parser.OomLogParser`), which hands out a report once the next
one starts; a live agent cannot wait for the next kill, so :class:`KillReader` flushes
the parser once the log has been quiet for :data:`SETTLE_S` after a report named its
victim (a report is printed in one burst).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from oomguard.errors import KernelLogUnavailable
from oomguard.kernlog import kmsg
from oomguard.kernlog.event import OomEvent
from oomguard.kernlog.parser import OomLogParser

__all__ = [
    "SETTLE_S",
    "CommandSource",
    "FileSource",
    "KillReader",
    "KmsgSource",
    "LogLine",
    "LogSource",
    "SeenKill",
    "open_source",
]

#: quiet time after a report named its victim before it is handed out (seconds)
SETTLE_S = 0.25
#: quiet time after which a report still without a victim is handed out anyway (cut)
GIVE_UP_S = 3.0
#: how often a source without a descriptor to wait on (a file) is read
POLL_S = 0.2
_READ_SIZE = 16384


@dataclass(frozen=True)
class LogLine:
    """One line of the kernel log as read, and its ``/dev/kmsg`` sequence number."""

    text: str
    seq: int | None = None


@dataclass(frozen=True)
class SeenKill:
    """One OOM kill read from the log, with where its report starts."""

    event: OomEvent
    #: the /dev/kmsg sequence number of the report's first record (None: not kmsg)
    seq: int | None
    #: time since boot of the report's first line, in seconds (None: the log has none)
    stamp: float | None


class LogSource(Protocol):
    """Where lines come from. ``read`` never blocks; ``fileno`` is what to ``select`` on
    (None: poll on a timer)."""

    name: str
    #: records overwritten before they were read (kmsg only; 0 for others)
    lost: int

    def fileno(self) -> int | None: ...

    def read(self) -> list[LogLine]: ...

    def close(self) -> None: ...


def _reason(err: OSError, path: str) -> str:
    if err.errno in (errno.EPERM, errno.EACCES):
        return f"cannot read {path}: {os.strerror(err.errno)} (needs CAP_SYSLOG)"
    return f"cannot read {path}: {err.strerror or err}"


class KmsgSource:
    """``/dev/kmsg`` from the oldest record still in the ring buffer. Records overwritten
    before they were read are counted in :attr:`lost` (a gap in sequence numbers)."""

    name = "kmsg"

    def __init__(self, path: str = "/dev/kmsg") -> None:
        self.path = path
        self.lost = 0
        self._last_seq: int | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            # A saved file standing in for the device is always readable: poll it instead.
            self._is_device = stat.S_ISCHR(os.fstat(self._fd).st_mode)
        except OSError as err:
            raise KernelLogUnavailable(_reason(err, path), path=path) from None

    def fileno(self) -> int | None:
        return self._fd if self._is_device else None

    def read(self) -> list[LogLine]:
        out: list[LogLine] = []
        pending = b""
        while True:
            try:
                chunk = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as err:
                if err.errno == errno.EPIPE:
                    continue  # overwritten while we read: the seq gap counts it
                raise KernelLogUnavailable(_reason(err, self.path), path=self.path) from None
            if not chunk:
                # A regular file standing in for the device (tests): split it by lines.
                break
            pending += chunk
            if not pending.endswith(b"\n"):
                continue
            for raw in pending.split(b"\n"):
                self._take(raw, out)
            pending = b""
        if pending:
            for raw in pending.split(b"\n"):
                self._take(raw, out)
        return out

    def _take(self, raw: bytes, out: list[LogLine]) -> None:
        record = kmsg.parse_record(raw)
        if record is None:
            return  # a " KEY=VALUE" dictionary line, or an empty one
        if self._last_seq is not None and record.seq > self._last_seq + 1:
            self.lost += record.seq - self._last_seq - 1
        self._last_seq = record.seq
        # The raw record (escapes intact): the parser reads its header, and the event's
        # first line then names the record's sequence number.
        out.append(LogLine(raw.decode("utf-8", "replace"), record.seq))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class CommandSource:
    """The output of a command that follows the log (``journalctl -k -o json -f``)."""

    lost = 0

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        exe = shutil.which(argv[0])
        if exe is None:
            raise KernelLogUnavailable(f"{argv[0]} is not installed", command=argv[0])
        try:
            self._proc = subprocess.Popen(
                [exe, *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError as err:
            raise KernelLogUnavailable(f"{argv[0]} failed: {err}", command=argv[0]) from None
        assert self._proc.stdout is not None
        self._fd = self._proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._buffer = b""

    def fileno(self) -> int | None:
        return self._fd

    def read(self) -> list[LogLine]:
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                if self._proc.poll() is not None:
                    raise KernelLogUnavailable(
                        f"{self.name} reader exited ({self._proc.returncode})", source=self.name
                    )
                break
            self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        return [LogLine(line.decode("utf-8", "replace")) for line in complete if line]

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


class FileSource:
    """A log file (``/var/log/kern.log``), read from its start and then tailed."""

    lost = 0

    def __init__(self, path: str) -> None:
        self.name = path
        try:
            self._handle = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as err:
            raise KernelLogUnavailable(_reason(err, path), path=path) from None
        self._buffer = b""

    def fileno(self) -> int | None:
        return None

    def read(self) -> list[LogLine]:
        try:
            self._buffer += self._handle.read()
        except OSError as err:
            raise KernelLogUnavailable(_reason(err, self.name), path=self.name) from None
        *complete, self._buffer = self._buffer.split(b"\n")
        return [LogLine(line.decode("utf-8", "replace")) for line in complete if line]

    def close(self) -> None:
        self._handle.close()


JOURNAL_ARGV = ["journalctl", "-k", "-o", "json", "--no-pager", "-f", "-n", "all"]


def open_source(spec: str) -> LogSource:
    """``--kernel-log``: ``auto`` (``/dev/kmsg``, else the journal), ``kmsg``,
    ``journal``, or a file path. Raises
    :class:`~oomguard.errors.KernelLogUnavailable` with every reason for ``auto``."""
    if spec == "kmsg":
        return KmsgSource()
    if spec == "journal":
        return CommandSource("journal", JOURNAL_ARGV)
    if spec == "auto":
        reasons = []
        for name in ("kmsg", "journal"):
            try:
                return open_source(name)
            except KernelLogUnavailable as err:
                reasons.append(f"{name}: {err}")
        raise KernelLogUnavailable("no kernel log can be read (" + "; ".join(reasons) + ")")
    return FileSource(spec)


def _start_of(event: OomEvent) -> tuple[int | None, float | None]:
    first = event.lines[0] if event.lines else ""
    record = kmsg.parse_record(first)
    return (record.seq if record is not None else None), event.timestamp


class KillReader:
    """The kills in a source's lines, each handed out once its report is complete."""

    def __init__(self, source: LogSource, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.parser = OomLogParser()
        self._clock = clock
        self._last_line_at: float | None = None
        self._unsettled = False
        #: lines read so far, and the time the last one came (the clock's)
        self.lines_read = 0
        self.last_read_at: float | None = None

    @property
    def settling(self) -> bool:
        """Whether lines came that may still complete a report (poll again soon)."""
        return self._unsettled

    def wait(self, timeout: float) -> None:
        """Sleep until the source has something, or ``timeout`` seconds."""
        fd = self.source.fileno()
        if fd is None:
            time.sleep(min(timeout, POLL_S))
            return
        with contextlib.suppress(InterruptedError, OSError, ValueError):
            select.select([fd], [], [], timeout)

    def poll(self) -> list[SeenKill]:
        """Read what is there now; return the kills whose reports are complete."""
        lines = self.source.read()
        now = self._clock()
        events: list[OomEvent] = []
        for line in lines:
            events.extend(self.parser.feed(line.text))
        if lines:
            self.lines_read += len(lines)
            self.last_read_at = now
            self._last_line_at = now
            self._unsettled = True
        elif self._unsettled and self._last_line_at is not None:
            quiet = now - self._last_line_at
            pending = self.parser.pending()
            named = all(e.victim_pid is not None for e in pending)
            if not pending:
                self._unsettled = False
            elif (named and quiet >= SETTLE_S) or quiet >= GIVE_UP_S:
                events.extend(self.parser.flush())
                self._unsettled = False
        return [SeenKill(e, *_start_of(e)) for e in events if e.victim_pid is not None]

    def close(self) -> None:
        self.source.close()
