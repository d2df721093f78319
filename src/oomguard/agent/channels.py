"""Where kill reports go: webhooks (signed, Slack-safe ``text``), Sentry (one issue per
workload) and JSON log lines, built on what :mod:`oomguard.notify` has (Standard Webhooks
signing, Slack escaping, redaction, the Sentry DSN check).

The agent delivers each report before it moves its cursor, so a channel's ``send``
blocks: a webhook is retried with backoff for at most ``give_up_s`` seconds, then
skipped (and counted), so a receiver that is down cannot stop the agent reading.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Protocol, cast

import httpx

from oomguard.agent.report import JsonValue, KillReport
from oomguard.agent.severity import Severity
from oomguard.notify.secrets import Redactor, redact_url
from oomguard.notify.slack import MAX_TEXT, cap, slack_escape
from oomguard.notify.webhook import EVENT_HEADER, ID_HEADER, RETRY_STATUSES, sign

if TYPE_CHECKING:
    from sentry_sdk._types import Event

__all__ = ["Channel", "JsonLogChannel", "SentryChannel", "WebhookChannel", "body_of"]

log = logging.getLogger("oomguard.agent")

#: the webhook event (``X-Oomguard-Event`` and the body's ``event``)
EVENT = "oom_kill"


class Channel(Protocol):
    name: str

    def send(self, report: KillReport, suppressed: int) -> bool:
        """Deliver one report (``suppressed``: the workload's kills held back since its
        last notice); False when it gave up."""

    def close(self) -> None: ...


def body_of(report: KillReport, suppressed: int, delivery_id: str) -> dict[str, JsonValue]:
    """A webhook body / JSON log line: ``event``, ``id``, ``time``, ``text`` (Slack-safe),
    ``suppressed``, then the report's fields."""
    text = report.summary()
    if suppressed:
        text += f" (+{suppressed} more since the last notice)"
    return {
        "event": EVENT,
        "id": delivery_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.seen_at)),
        "text": slack_escape(cap("oomguard: " + text, MAX_TEXT) or ""),
        "suppressed": suppressed,
        **report.fields(),
    }


def _redacted(redactor: Redactor, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    cleaned: dict[str, JsonValue] = redactor.value(value)
    return cleaned


class WebhookChannel:
    """POSTs each report to every URL, signed (Standard Webhooks) under ``keys``."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        keys: Sequence[bytes] = (),
        redactor: Redactor | None = None,
        timeout: float = 5.0,
        give_up_s: float = 60.0,
    ) -> None:
        self.name = "webhook"
        self.urls = tuple(urls)
        self.keys = tuple(keys)
        self.redactor = redactor if redactor is not None else Redactor()
        self.give_up_s = give_up_s
        self.run_id = uuid.uuid4().hex[:12]
        self._seq = 0
        self.client = httpx.Client(
            timeout=timeout,
            headers={"User-Agent": "oomguard-agent", "Content-Type": "application/json"},
        )

    def send(self, report: KillReport, suppressed: int) -> bool:
        self._seq += 1
        delivery_id = f"{self.run_id}-{self._seq}"
        body = json.dumps(
            _redacted(self.redactor, body_of(report, suppressed, delivery_id))
        ).encode()
        return all([self._post(url, delivery_id, body) for url in self.urls])

    def _post(self, url: str, delivery_id: str, body: bytes) -> bool:
        deadline = time.monotonic() + self.give_up_s
        delay = 0.2
        while True:
            headers = {EVENT_HEADER: EVENT, ID_HEADER: delivery_id}
            if self.keys:
                headers.update(sign(self.keys, delivery_id, int(time.time()), body))
            try:
                status = self.client.post(url, content=body, headers=headers).status_code
            except httpx.HTTPError as err:
                reason = f"{type(err).__name__}"
            else:
                if 200 <= status < 300:
                    return True
                if status not in RETRY_STATUSES:
                    log.warning(
                        "webhook %s refused report %s (HTTP %d)",
                        redact_url(url),
                        delivery_id,
                        status,
                    )
                    return False
                reason = f"HTTP {status}"
            if time.monotonic() + delay > deadline:
                log.warning(
                    "webhook %s: %s; report %s skipped after %.0f s",
                    redact_url(url),
                    reason,
                    delivery_id,
                    self.give_up_s,
                )
                return False
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def close(self) -> None:
        self.client.close()


_SENTRY_LEVEL = {Severity.CRITICAL: "fatal", Severity.ERROR: "error", Severity.WARNING: "warning"}


class SentryChannel:
    """One Sentry event per report, grouped into one issue per workload."""

    def __init__(self, dsn: str, *, redactor: Redactor | None = None, timeout: float = 5.0) -> None:
        from oomguard.notify.sentry import check_dsn

        check_dsn(dsn)
        import sentry_sdk

        self.name = "sentry"
        self.timeout = timeout
        scrub = redactor if redactor is not None else Redactor()
        self.redactor = scrub
        self.client = sentry_sdk.Client(
            dsn,
            default_integrations=False,
            auto_enabling_integrations=False,
            integrations=[],
            max_breadcrumbs=0,
            attach_stacktrace=False,
            before_send=lambda event, hint: scrub.value(event),
        )

    def send(self, report: KillReport, suppressed: int) -> bool:
        fields = report.fields()
        workload = report.workload
        event: dict[str, object] = {
            "message": report.summary() + "\n\n" + "\n".join(report.kernel_lines()),
            "level": _SENTRY_LEVEL[report.severity],
            "logger": "oomguard.agent",
            "fingerprint": ["oomguard-agent", workload.key],
            "transaction": workload.label,
            "server_name": report.node,
            "tags": {
                "severity": report.severity.value,
                "trigger": report.trigger.value,
                "command": report.command,
                "namespace": workload.namespace or "",
                "pod": workload.pod or workload.pod_uid or "",
                "unit": workload.unit or "",
                "role": report.role.value,
            },
            "contexts": {"oom_kill": {**fields, "suppressed": suppressed}},
            "timestamp": report.seen_at,
        }
        # The SDK's Event is a TypedDict of the keys built above.
        sent = self.client.capture_event(cast("Event", self.redactor.value(event))) is not None
        self.client.flush(timeout=self.timeout)
        return sent

    def close(self) -> None:
        self.client.close(timeout=self.timeout)


class JsonLogChannel:
    """A JSON line per report on ``stream`` (stderr: journald, Loki, ELK pick it up)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.name = "jsonlog"
        self.stream = stream if stream is not None else sys.stderr
        self._seq = 0

    def send(self, report: KillReport, suppressed: int) -> bool:
        self._seq += 1
        line = body_of(report, suppressed, f"log-{self._seq}")
        line["level"] = report.severity.value
        self.stream.write(json.dumps(line) + "\n")
        self.stream.flush()
        return True

    def close(self) -> None:
        pass
