"""Webhooks: a signed JSON POST per notification, delivered in order, off the loop thread.

Each URL has its own :class:`~oomguard.notify.base.Outbox` and thread: a receiver that is
down holds back only its own notifications. A delivery that fails for a reason that may
pass (the receiver unreachable, a timeout, 5xx, 408, 429) is retried with exponential
backoff for as long as oomguard runs, so a receiver that comes back gets every notification
in order; meanwhile newer ones wait in the bounded queue, and past its bound they are
dropped and counted (``seq`` has a gap where they were). A receiver that refuses one
(another 4xx) gets it :data:`REFUSED_TRIES` times, then the next one.

Deliveries are signed as `Standard Webhooks <https://www.standardwebhooks.com/>`_ says,
under the key(s) in ``--notify-secret-file``: ``webhook-id`` (the delivery's id, the same on
every try), ``webhook-timestamp`` (Unix seconds of this try: a retry after an outage is
signed afresh, so a receiver can refuse old timestamps as replays) and
``webhook-signature``: ``v1,<base64 of HMAC-SHA256(key, id + "." + timestamp + "." +
body)>``, one per key, space-separated (two during a key rotation). The event's own time
is the body's ``time``. The body's ``text`` is for people and safe for Slack
(:mod:`~oomguard.notify.slack`); every string of the body is redacted
(:mod:`~oomguard.notify.secrets`) before it is sent. Logs and stats name a receiver by
its scheme and host only: a webhook URL is its own credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from oomguard.jobs.jsonvalue import JSONObject
from oomguard.notify.base import Outbox, OutboxStats
from oomguard.notify.notice import JobNotice, Notice, notice_fields, rfc3339
from oomguard.notify.secrets import Redactor, redact_url
from oomguard.notify.slack import slack_text

log = logging.getLogger("oomguard.notify")

#: the Standard Webhooks headers
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
EVENT_HEADER = "X-Oomguard-Event"
#: what ``--notify-on`` may say
NOTIFY_ON = ("failed", "final", "job")
#: tries of a notification the receiver refuses (a 4xx other than 408 and 429)
REFUSED_TRIES = 3
#: statuses worth another try
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def event_name(notice: Notice, on: Sequence[str]) -> str | None:
    """The webhook event for ``notice`` under ``--notify-on`` (None: not sent).

    ``failed``: every failed attempt (``attempt_failed``; ``task_failed`` for the last one of
    a task that failed for good); ``final``: ``task_failed`` only; ``job``: ``job_finished``.
    """
    if isinstance(notice, JobNotice):
        return "job_finished" if notice.finished and "job" in on else None
    if notice.final and ("final" in on or "failed" in on):
        return "task_failed"
    if notice.failed and "failed" in on:
        return "attempt_failed"
    return None


def webhook_body(event: str, notice: Notice, seq: int, delivery_id: str) -> JSONObject:
    """The JSON body of one POST: ``event``, ``id``, ``seq``, ``time`` (when the event
    happened), ``text`` (a line for people, Slack-safe: it makes the body a valid Slack
    incoming-webhook message), then the notice's raw fields
    (:func:`~oomguard.notify.notice.notice_fields`)."""
    return {
        "event": event,
        "id": delivery_id,
        "seq": seq,
        "time": rfc3339(notice.at),
        "text": slack_text(notice),
        **notice_fields(notice),
    }


def signature(key: bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of Standard Webhooks: HMAC-SHA256 under ``key`` of
    ``id.timestamp.body``."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(keys: Sequence[bytes], delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of a delivery: one signature per key."""
    return {
        ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(signature(k, delivery_id, timestamp, body) for k in keys),
    }


def verify(
    key: bytes,
    headers: dict[str, str],
    body: bytes,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether a delivery's headers carry a valid signature of ``body`` under ``key``, made
    within ``tolerance`` seconds of ``now`` (for receivers written in Python)."""
    low = {k.lower(): v for k, v in headers.items()}
    delivery_id, stamp, given = (
        low.get(ID_HEADER),
        low.get(TIMESTAMP_HEADER),
        low.get(SIGNATURE_HEADER),
    )
    if not delivery_id or not stamp or not given or not stamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        return False
    expected = signature(key, delivery_id, int(stamp), body)
    return any(hmac.compare_digest(expected, part) for part in given.split())


class Webhooks(Protocol):
    """What a receiver reads of the notifier that owns it."""

    run_id: str
    keys: tuple[bytes, ...]
    redactor: Redactor
    queue_size: int
    timeout: float
    backoff: float
    backoff_max: float
    transport: httpx.BaseTransport | None


@dataclass(frozen=True)
class _Delivery:
    event: str
    seq: int
    notice: Notice


class _Receiver:
    """One URL: its outbox, its HTTP client, its retries. Logs name it by :attr:`name`
    (its number, scheme and host), never its whole URL."""

    def __init__(self, url: str, n: int, owner: Webhooks) -> None:
        self.url = url
        self.name = f"{n} ({redact_url(url)})"
        self.owner = owner
        self.outbox: Outbox[_Delivery] = Outbox(
            f"webhook {self.name}", self._deliver, owner.queue_size, weigh=_weigh
        )
        self.client = httpx.Client(
            timeout=owner.timeout,
            headers={"User-Agent": "oomguard", "Content-Type": "application/json"},
            transport=owner.transport,
        )
        self.down_since: float | None = None

    def _deliver(self, item: _Delivery) -> bool:
        delivery_id = f"{self.owner.run_id}-{item.seq}"
        posted = self.post(item.event, item.notice, item.seq, delivery_id, self.outbox.wait)
        return bool(posted)

    def post(
        self,
        event: str,
        notice: Notice,
        seq: int,
        delivery_id: str,
        wait: Callable[[float], bool],
    ) -> bool | None:
        """POST one notice until it is delivered (True), refused :data:`REFUSED_TRIES`
        times (False), or ``wait`` says to give up (None: not delivered, not refused)."""
        owner = self.owner
        fields = webhook_body(event, notice, seq, delivery_id)
        body = json.dumps(owner.redactor.value(fields)).encode()
        delay = owner.backoff
        refused = 0
        while True:
            pause = delay
            headers = {EVENT_HEADER: event, ID_HEADER: delivery_id}
            if owner.keys:
                # Signed at each try: its timestamp is the time of this send.
                headers.update(sign(owner.keys, delivery_id, int(time.time()), body))
            try:
                response = self.client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as err:
                # httpx may quote the URL in its message: it is a credential.
                reason = str(err).replace(self.url, redact_url(self.url))
                self._down(f"{type(err).__name__}: {reason}")
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self._up()
                    return True
                if status in RETRY_STATUSES:
                    self._down(f"HTTP {status}")
                    pause = max(delay, _retry_after(response))
                else:
                    refused += 1
                    if refused >= REFUSED_TRIES:
                        log.warning(
                            "webhook %s refused notification %s (HTTP %d, %d tries): skipped",
                            self.name,
                            delivery_id,
                            status,
                            refused,
                        )
                        return False
            if wait(min(pause, owner.backoff_max)):
                return None  # closing, and out of time
            delay = min(delay * 2, owner.backoff_max)

    def _down(self, reason: str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("webhook %s: %s; retrying with backoff", self.name, reason)

    def _up(self) -> None:
        if self.down_since is not None:
            log.warning(
                "webhook %s: delivering again after %.1f s",
                self.name,
                time.monotonic() - self.down_since,
            )
            self.down_since = None


def _weigh(item: _Delivery) -> int:
    return item.notice.weight


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("Retry-After", 0))
    except ValueError:
        return 0.0


class WebhookNotifier:
    """POSTs notifications to ``urls`` (see the module docstring), signed under ``keys``
    (none: unsigned), every string of a body redacted by ``redactor``."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        on: Sequence[str] = ("final", "job"),
        keys: Sequence[bytes] = (),
        redactor: Redactor | None = None,
        queue_size: int = 1000,
        timeout: float = 5.0,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.on = tuple(on)
        self.keys = tuple(keys)
        self.redactor = redactor if redactor is not None else Redactor()
        self.queue_size = queue_size
        self.timeout = timeout
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.transport = transport
        #: names this process's deliveries: ``id`` is ``<run_id>-<seq>``
        self.run_id = uuid.uuid4().hex[:12]
        self._seq = 0
        self.receivers = [_Receiver(url, n, self) for n, url in enumerate(urls, 1)]
        for receiver in self.receivers:
            receiver.outbox.start()

    def notify(self, notice: Notice) -> None:
        event = event_name(notice, self.on)
        if event is None:
            return
        # Numbered whether or not a queue takes it: a receiver sees a gap where it dropped.
        self._seq += 1
        item = _Delivery(event, self._seq, notice)
        for receiver in self.receivers:
            receiver.outbox.put(item)

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for receiver in self.receivers:
            receiver.outbox.stop_taking()  # all drain side by side, within one deadline
        for receiver in self.receivers:
            receiver.outbox.close(max(0.0, deadline - time.monotonic()))
            if not receiver.outbox.alive:
                receiver.client.close()

    def stats(self) -> dict[str, OutboxStats]:
        """Each receiver's counts, by its name (number, scheme and host: not its URL)."""
        return {r.name: r.outbox.stats() for r in self.receivers}


__all__ = [
    "ID_HEADER",
    "NOTIFY_ON",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookNotifier",
    "event_name",
    "sign",
    "signature",
    "verify",
    "webhook_body",
]
