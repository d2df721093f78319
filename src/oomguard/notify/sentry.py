"""Sentry: every failed attempt becomes an event, sent by the scheduler on the dead
worker's behalf (``pip install 'oomguard[sentry]'``).

An event names the task by its label as its culprit (and transaction): the function, or
``cmd:PROGRAM`` for a command, never a command's arguments. It tags the failure class,
carries the memory key, limit, peak, attempt number and worker as the ``oomguard``
context, and has the kernel's report (OOM classes) or the traceback (``error``) as its
message body. Its fingerprint is ``["oomguard", label, class]``: one Sentry issue per
function and class, not one per task. Every string of an event is redacted
(:mod:`~oomguard.notify.secrets`: ``--redact`` and the DSN itself) before it is sent.
A task that failed for good is ``error`` level (its
class: ``needs_more_memory`` for an OOM kill at the most oomguard can give, else the
attempt's); an attempt that is retried is ``warning``.

The SDK is used as a client of its own (no ``sentry_sdk.init``, no global hub, no
integrations): oomguard's events never mix with the application's own Sentry set-up.
Events are built on the outbox's thread and handed to the SDK's transport, which sends them
from its own thread: the loop never waits for the network.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, cast

from oomguard.errors import ConfigError
from oomguard.jobs.command import label
from oomguard.jobs.jsonvalue import JSONObject
from oomguard.notify.base import Outbox
from oomguard.notify.notice import AttemptNotice, Notice, summary, weigh
from oomguard.notify.secrets import Redactor
from oomguard.units import format_size

if TYPE_CHECKING:
    import sentry_sdk
    from sentry_sdk._types import Event

log = logging.getLogger("oomguard.notify")

EXTRA = "pip install 'oomguard[sentry]'"
#: the most events the SDK's transport holds unsent (the SDK drops what comes beyond)
SDK_QUEUE = 250
#: after handing this many events to the SDK, wait for its transport to send them: the
#: backlog stays in the outbox (bounded, counted), not in the SDK's queue (which drops)
FLUSH_EVERY = 100


def sentry_event(notice: AttemptNotice) -> JSONObject:
    """The Sentry event (a JSON-ready dict) for a failed attempt."""
    group = notice.group_class or "unknown"
    task = label(notice.function)
    # The first line is the title: the same for every event of the issue.
    title = f"{task}: {group}"
    first = (notice.message or "").strip().splitlines()[:1]
    if first and first[0] != group:
        title += f": {first[0]}"
    body = [title, "", summary(notice)]
    if notice.kernel_lines:
        body += ["", "kernel:", *notice.kernel_lines]
    if notice.traceback:
        body += ["", notice.traceback.rstrip()]
    context: JSONObject = {
        "job_id": notice.job_id,
        "task_id": notice.task_id,
        "attempt_id": notice.attempt_id,
        "attempt": notice.attempt,
        "outcome": notice.outcome,
        "failure_class": notice.failure_class,
        "final_class": notice.final_class,
        "memory_key": notice.memory_key,
        "limit_bytes": notice.limit_bytes,
        "limit": format_size(notice.limit_bytes) if notice.limit_bytes else None,
        "peak_bytes": notice.peak_bytes,
        "peak": format_size(notice.peak_bytes) if notice.peak_bytes else None,
        "worker": notice.worker,
        "retry_at": notice.retry_at,
        **dict(notice.evidence),
    }
    tags: JSONObject = {
        "failure_class": notice.failure_class or "unknown",
        "function": task,
        "final": "true" if notice.final else "false",
    }
    if notice.final_class:
        tags["final_class"] = notice.final_class
    return {
        "level": "error" if notice.final else "warning",
        "logger": "oomguard",
        "message": "\n".join(body),
        "culprit": task,
        "transaction": task,
        "fingerprint": ["oomguard", task, group],
        "tags": tags,
        "contexts": {"oomguard": {k: v for k, v in context.items() if v is not None}},
        "extra": {"kernel_lines": list(notice.kernel_lines)} if notice.kernel_lines else {},
        "timestamp": notice.at,
    }


def check_dsn(dsn: str) -> None:
    """Raise ConfigError if the SDK is missing or ``dsn`` is not a DSN."""
    try:
        from sentry_sdk.utils import BadDsn, Dsn
    except ImportError:
        raise ConfigError(f"--sentry-dsn needs the Sentry SDK: {EXTRA}") from None
    try:
        Dsn(dsn)
    except BadDsn as err:
        raise ConfigError(f"--sentry-dsn is not a valid Sentry DSN: {err}") from None


def _client(dsn: str, queue_size: int, redactor: Redactor) -> sentry_sdk.Client:
    try:
        import sentry_sdk
        from sentry_sdk.utils import BadDsn
    except ImportError:
        raise ConfigError(f"--sentry-dsn needs the Sentry SDK: {EXTRA}") from None
    try:
        return sentry_sdk.Client(
            dsn,
            # oomguard's own client: nothing hooked into the process, the application's
            # own Sentry set-up (if any) left alone.
            default_integrations=False,
            auto_enabling_integrations=False,
            integrations=[],
            max_breadcrumbs=0,
            # No stack of the sending thread (on by default since SDK 3): its local
            # variables would carry the notice itself (a command's arguments) to Sentry.
            attach_stacktrace=False,
            # The last look at what the SDK sends, with what it added to the event.
            before_send=lambda event, hint: redactor.value(event),
            # Its transport's own queue (events it has not sent yet) is bounded too.
            transport_queue_size=min(queue_size, SDK_QUEUE),
        )
    except BadDsn as err:
        raise ConfigError(f"--sentry-dsn is not a valid Sentry DSN: {err}") from None


class SentryNotifier:
    """Sends an event per failed attempt to the Sentry project of ``dsn``."""

    def __init__(
        self,
        dsn: str,
        *,
        queue_size: int = 1000,
        timeout: float = 5.0,
        redactor: Redactor | None = None,
    ) -> None:
        self.redactor = redactor if redactor is not None else Redactor()
        self.client = _client(dsn, queue_size, self.redactor)
        self.timeout = timeout
        self._handed = 0
        self.outbox: Outbox[AttemptNotice] = Outbox(
            "sentry", self._deliver, queue_size, weigh=weigh
        )
        self.outbox.start()

    def notify(self, notice: Notice) -> None:
        if isinstance(notice, AttemptNotice) and notice.failed:
            self.outbox.put(notice)

    def _deliver(self, notice: AttemptNotice) -> bool:
        # Queued on the SDK's transport, which sends (and rate-limits) from its own thread.
        event = self.redactor.value(sentry_event(notice))
        # The SDK's Event is a TypedDict of the keys sentry_event writes.
        sent = self.client.capture_event(cast("Event", event)) is not None
        self._handed += 1
        if self._handed % FLUSH_EVERY == 0:
            self.client.flush(timeout=self.timeout)
        return sent

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.outbox.close(timeout)
        self.client.close(timeout=max(0.5, deadline - time.monotonic()))
