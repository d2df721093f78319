"""JSON logs (``--log-format json``): one line per attempt end and per job state change,
and oomguard's own log records as JSON lines too, for Loki, ELK or journald.

Every line is one JSON object with ``ts`` (RFC 3339, UTC), ``level``, ``logger`` and
``event`` first:

* ``attempt_ended``: the fields of :func:`~oomguard.notify.notice.notice_fields` for an
  attempt (``outcome``, ``failure_class``, ``final_class``, ``limit_bytes``, ...);
* ``job_state``: those of a job (``state``, ``counts``, ``failures_by_class``, ...);
* ``log``: a log record: ``message``, and ``exception`` (its traceback, or null).

The keys are stable (README "JSON logs" lists them); a key that does not apply is null.
Lines are written to standard error by the outbox's thread, one ``write`` each.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import TextIO

from oomguard.jobs.jsonvalue import JSONObject
from oomguard.notify.base import Outbox
from oomguard.notify.notice import (
    AttemptNotice,
    JobNotice,
    Notice,
    notice_fields,
    rfc3339,
    weigh,
)

LEVELS = {
    "succeeded": "info",
    "retrying": "warning",
    "failed": "error",
    "interrupted": "info",
    "cancelled": "info",
}


def json_line(notice: Notice) -> JSONObject:
    """The JSON log line of a notice."""
    if isinstance(notice, JobNotice):
        level = {"failed": "error", "cancelled": "warning"}.get(notice.state, "info")
        event = "job_state"
    else:
        level = LEVELS.get(notice.outcome, "info")
        event = "attempt_ended"
    return {
        "ts": rfc3339(notice.at),
        "level": level,
        "logger": "oomguard",
        "event": event,
        **notice_fields(notice),
    }


class JsonLogNotifier:
    """Writes :func:`json_line` of every notice, a line each, from its own thread."""

    def __init__(
        self, *, queue_size: int = 10000, stream: Callable[[], TextIO] | None = None
    ) -> None:
        # The stream is looked up at each line: tests (and daemons) swap sys.stderr.
        self._stream = stream or (lambda: sys.stderr)
        self.outbox: Outbox[Notice] = Outbox("json log", self._write, queue_size, weigh=weigh)
        self.outbox.start()

    def notify(self, notice: Notice) -> None:
        if isinstance(notice, (AttemptNotice, JobNotice)):
            self.outbox.put(notice)

    def _write(self, notice: Notice) -> bool:
        stream = self._stream()
        stream.write(json.dumps(json_line(notice), default=str) + "\n")
        stream.flush()
        return True

    def close(self, timeout: float) -> None:
        self.outbox.close(timeout)


class JsonFormatter(logging.Formatter):
    """Log records as JSON lines with the same leading keys (``event``: ``log``)."""

    def format(self, record: logging.LogRecord) -> str:
        exception = None
        if record.exc_info:
            exception = self.formatException(record.exc_info)
        elif record.exc_text:
            exception = record.exc_text
        return json.dumps(
            {
                "ts": rfc3339(record.created),
                "level": record.levelname.lower(),
                "logger": record.name,
                "event": "log",
                "message": record.getMessage(),
                "exception": exception,
            },
            default=str,
        )
