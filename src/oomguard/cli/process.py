"""How the long-running commands (``run``, ``serve``) behave as processes.

Their log goes to stderr (a scheduler loop that dies logs its traceback there), and
SIGTERM stops them as cleanly as Ctrl-C does: the scheduler ends its running attempts as
``interrupted``, stops its workers and removes their cgroups before the process exits.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from types import FrameType


class Terminated(BaseException):
    """SIGTERM arrived: stop cleanly.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way
    out swallows it.
    """


def stop_on_sigterm() -> None:
    """From now on the first SIGTERM raises :class:`Terminated` in the main thread.

    Later ones are ignored (by a Python handler, not ``SIG_IGN``, which children would
    inherit): they must not cut short the cleanup the first one started; a supervisor
    that loses patience sends SIGKILL.
    """

    def ignore(signum: int, frame: FrameType | None) -> None:
        pass

    def terminate(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, ignore)
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)


class _Stderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record comes (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def log_to_stderr(log_format: str = "plain") -> None:
    """oomguard's warnings and errors, tracebacks included, on stderr (one handler per
    process; a second call changes its format). ``json``: one JSON object a line, from
    INFO up (see :mod:`oomguard.notify.jsonlog`). The audit log of a server
    (``oomguard.audit``) is written from INFO up in either format."""
    logging.getLogger("oomguard.audit").setLevel(logging.INFO)
    logger = logging.getLogger("oomguard")
    handler = next((h for h in logger.handlers if isinstance(h, _Stderr)), None)
    if handler is None:
        handler = _Stderr()
        logger.addHandler(handler)
    if log_format == "json":
        from oomguard.notify.jsonlog import JsonFormatter

        handler.setFormatter(JsonFormatter())
        logger.setLevel(logging.INFO)
    else:
        handler.setFormatter(logging.Formatter("oomguard: %(levelname)s: %(message)s"))


def say(text: str, log_format: str, level: int = logging.INFO) -> None:
    """A line for the operator on stderr: ``oomguard: TEXT`` (``oomguard: error: TEXT`` at
    ERROR), or with JSON logs a log record, so that every line on stderr is JSON."""
    if log_format == "json":
        logging.getLogger("oomguard").log(level, "%s", text)
        return
    prefix = "error: " if level >= logging.ERROR else ""
    sys.stderr.write(f"oomguard: {prefix}{text}\n")
    sys.stderr.flush()


__all__ = ["Terminated", "log_to_stderr", "say", "stop_on_sigterm"]


def terminate(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 30.0) -> None:
    """Stop a process we started: SIGTERM, ``grace`` seconds to exit, then SIGKILL; reaped
    either way."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
