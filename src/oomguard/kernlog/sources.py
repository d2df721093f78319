"""Read the kernel log: ``/dev/kmsg``, ``dmesg``, ``journalctl -k``, a file or stdin.

Every reader yields text lines in a form :mod:`oomguard.kernlog.parser` parses. OS errors
are translated here, at the boundary, into :class:`~oomguard.errors.KernelLogUnavailable`
carrying the reason. ``/proc/kmsg`` is never read: reading it consumes the messages.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from oomguard.errors import KernelLogUnavailable
from oomguard.kernlog import kmsg

__all__ = ["KernelLogFollower", "iter_source_lines"]

#: Bytes read per /dev/kmsg record: one read() returns one whole record or fails EINVAL.
_KMSG_READ_SIZE = 16384
#: How long --follow waits for a new line before yielding an idle tick ("").
FOLLOW_TICK_S = 1.0


def _reason(err: OSError, path: str | Path) -> str:
    if err.errno in (errno.EPERM, errno.EACCES):
        return (
            f"cannot read {path}: {os.strerror(err.errno)} "
            "(kernel.dmesg_restrict=1 needs CAP_SYSLOG, e.g. run as root)"
        )
    if err.errno == errno.ENOENT:
        return f"cannot read {path}: no such file or device"
    return f"cannot read {path}: {err.strerror or err}"


class KernelLogFollower:
    """Tail ``/dev/kmsg`` without blocking.

    Each call to :meth:`read_new` returns the records that arrived since the last call,
    as ``[seconds.micros] text`` lines (dmesg's form, so the parser gets the timestamp).
    """

    def __init__(self, path: str | Path = "/dev/kmsg") -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._is_device = True

    def open(self, from_start: bool = False) -> None:
        """Open the log; unless ``from_start``, skip the records already in it.

        Raises :class:`~oomguard.errors.KernelLogUnavailable` with the reason when the
        device cannot be opened (missing, or ``dmesg_restrict`` without CAP_SYSLOG).
        """
        self.close()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            raise KernelLogUnavailable(_reason(err, self.path), path=str(self.path)) from None
        try:
            if not from_start:
                os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            pass  # a plain file or pipe standing in for the device: read it from the start
        try:
            self._is_device = stat.S_ISCHR(os.fstat(fd).st_mode)
        except OSError:
            self._is_device = True
        self._fd = fd

    @property
    def is_device(self) -> bool:
        """Reading the kernel's device (``select`` says when a record arrives), not a
        plain file or pipe standing in for it (always readable: poll it on a timer)."""
        return self._is_device

    @property
    def fileno(self) -> int | None:
        """The open descriptor (for ``select``), or ``None`` when closed."""
        return self._fd

    def read_new(self) -> list[str]:
        """Every record available now, as text lines; never blocks."""
        if self._fd is None:
            raise KernelLogUnavailable(f"{self.path} is not open", path=str(self.path))
        lines: list[str] = []
        pending = b""
        while True:
            try:
                chunk = os.read(self._fd, _KMSG_READ_SIZE)
            except BlockingIOError:
                break  # EAGAIN: nothing more for now
            except InterruptedError:
                continue
            except OSError as err:
                if err.errno == errno.EPIPE:
                    continue  # records were overwritten before we read them: go on
                raise KernelLogUnavailable(_reason(err, self.path), path=str(self.path)) from None
            if not chunk:
                break  # end of a regular file
            if self._is_device:
                lines.extend(_kmsg_record_lines(chunk))
            else:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for record in complete:
                    lines.extend(_kmsg_record_lines(record))
        if pending:
            lines.extend(_kmsg_record_lines(pending))
        return [line for line in lines if line]

    def close(self) -> None:
        """Close the device (safe to call twice)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> KernelLogFollower:
        if self._fd is None:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kmsg_record_lines(record: bytes) -> list[str]:
    """Turn one ``prio,seq,usec,flags;text`` record into ``[  s.us] text`` lines."""
    parsed = kmsg.parse_record(record)
    if parsed is None:  # not a record: a dictionary line, or a file that is not kmsg's
        text = record.decode("utf-8", "replace")
        return [text.rstrip("\n")] if text.strip() and not text.startswith(" ") else []
    usec = parsed.usec
    stamp = f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] "
    return [stamp + line for line in parsed.text.split("\n")]


# ---------------------------------------------------------------------------------------
# Sources for `oomguard oom events`.


def _kmsg_lines(follow: bool, path: str = "/dev/kmsg") -> Iterator[str]:
    follower = KernelLogFollower(path)
    follower.open(from_start=True)
    try:
        yield from follower.read_new()
        while follow:
            fd = follower.fileno
            if fd is not None:
                select.select([fd], [], [], FOLLOW_TICK_S)
            new = follower.read_new()
            yield from new if new else [""]
    finally:
        follower.close()


def _command_lines(argv: list[str], follow: bool) -> Iterator[str]:
    """Lines of a command's output; its failure becomes KernelLogUnavailable."""
    exe = shutil.which(argv[0])
    if exe is None:
        raise KernelLogUnavailable(f"{argv[0]} is not installed", command=argv[0])
    if not follow:
        try:
            done = subprocess.run(
                [exe, *argv[1:]], capture_output=True, text=True, errors="replace", timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise KernelLogUnavailable(f"{argv[0]} failed: {err}", command=argv[0]) from None
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["exit status"])[-1]
            raise KernelLogUnavailable(
                f"{argv[0]} failed ({done.returncode}): {message}", command=argv[0]
            )
        yield from done.stdout.splitlines()
        return
    proc = subprocess.Popen(
        [exe, *argv[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        errors="replace",
    )
    assert proc.stdout is not None
    try:
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        buffer = ""
        while True:
            ready, _, _ = select.select([fd], [], [], FOLLOW_TICK_S)
            if not ready:
                yield ""
                continue
            chunk = os.read(fd, 65536).decode("utf-8", "replace")
            if not chunk:
                break
            buffer += chunk
            *complete, buffer = buffer.split("\n")
            yield from complete
        if proc.wait() != 0:
            raise KernelLogUnavailable(f"{argv[0]} failed ({proc.returncode})", command=argv[0])
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()


def _file_lines(path: str, follow: bool) -> Iterator[str]:
    try:
        handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError as err:
        raise KernelLogUnavailable(_reason(err, path), path=path) from None
    with handle:
        try:
            yield from handle
            while follow:
                line = handle.readline()
                if line:
                    yield line
                else:
                    time.sleep(0.2)
                    yield ""
        except OSError as err:
            raise KernelLogUnavailable(_reason(err, path), path=path) from None


def _stamp_of(line: str) -> float | None:
    # Cheap look for the "[ 123.456]" dmesg stamp or the kmsg usec, for early --since cuts.
    match = re.match(r"^(?:\d+,\d+,(\d+),[^;]*;|.*?\[\s*(\d+\.\d+)\])", line)
    if match is None:
        return None
    if match.group(1) is not None:
        return int(match.group(1)) / 1_000_000
    return float(match.group(2))


#: Slack before ``since`` kept so that a report straddling the cut stays whole.
SINCE_SLACK_S = 120.0


def iter_source_lines(source: str, since: float | None, follow: bool) -> Iterator[str]:
    """Lines of the kernel log from ``source``.

    ``source`` is ``auto`` (``/dev/kmsg``, else ``dmesg``, else ``journalctl -k -o
    json``), ``kmsg``, ``dmesg``, ``journal``, ``-`` (stdin) or a file path. ``since`` is
    a time in seconds since boot: lines stamped well before it are skipped (the caller
    still filters events exactly). With ``follow``, new lines keep coming and an empty
    string is yielded whenever the log was idle for about a second.

    Raises :class:`~oomguard.errors.KernelLogUnavailable` when the source cannot be
    read; for ``auto``, with the reason each source failed.
    """
    lines = _open_source(source, follow)
    for line in lines:
        if since is not None and line:
            stamp = _stamp_of(line)
            if stamp is not None and stamp < since - SINCE_SLACK_S:
                continue
        yield line


def _open_source(source: str, follow: bool) -> Iterator[str]:
    if source == "kmsg":
        return _first_checked(_kmsg_lines(follow))
    if source == "dmesg":
        argv = ["dmesg", "--follow"] if follow else ["dmesg"]
        return _first_checked(_command_lines(argv, follow))
    if source == "journal":
        argv = ["journalctl", "-k", "-o", "json", "--no-pager"] + (["-f"] if follow else [])
        return _first_checked(_command_lines(argv, follow))
    if source == "-":
        return iter(sys.stdin) if not follow else _stdin_follow()
    if source == "auto":
        reasons: list[str] = []
        for name in ("kmsg", "dmesg", "journal"):
            try:
                return _open_source(name, follow)
            except KernelLogUnavailable as err:
                reasons.append(f"{name}: {err}")
        raise KernelLogUnavailable(
            "no kernel log can be read (" + "; ".join(reasons) + ")", source="auto"
        )
    return _first_checked(_file_lines(source, follow))


def _stdin_follow() -> Iterator[str]:
    yield from sys.stdin


def _first_checked(lines: Iterator[str]) -> Iterator[str]:
    """Start a generator now, so that it raises KernelLogUnavailable here, not later."""
    try:
        first = next(lines)
    except StopIteration:
        return iter(())
    return _chain(first, lines)


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest
