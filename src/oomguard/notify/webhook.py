"""Webhooks: a signed JSON POST per notification, delivered in order, off the loop thread.

Each URL has its own :class:`~oomguard.notify.base.Outbox` and thread: a receiver that is
down holds back only its own notifications. A delivery that fails for a reason that may
pass (the receiver unreachable, a timeout, 5xx, 408, 429) is retried with exponential
backoff for as long as oomguard runs, so a receiver that comes back gets every notification
in order; meanwhile newer ones wait in the bounded queue, and past its bound they are
dropped and counted (``seq`` has a gap where they were). A receiver that refuses one
(another 4xx) gets it :data:`REFUSED_TRIES` times, then the next one.

The body is signed with HMAC-SHA256 under the key in ``--notify-secret-file``:
``X-Oomguard-Signature: sha256=<hex of HMAC(key, raw body)>``. The body carries a unique
``id`` and its ``time``, so a receiver can refuse replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from oomguard.notify.base import Outbox, OutboxStats
from oomguard.notify.notice import JobNotice, Notice, notice_fields, rfc3339, summary

log = logging.getLogger("oomguard.notify")

SIGNATURE_HEADER = "X-Oomguard-Signature"
EVENT_HEADER = "X-Oomguard-Event"
DELIVERY_HEADER = "X-Oomguard-Delivery"
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


def webhook_body(event: str, notice: Notice, seq: int, delivery_id: str) -> dict[str, Any]:
    """The JSON body of one POST: ``event``, ``id``, ``seq``, ``time``, ``text`` (a line for
    people: it makes the body a valid Slack incoming-webhook message), then the notice's
    fields (:func:`~oomguard.notify.notice.notice_fields`)."""
    return {
        "event": event,
        "id": delivery_id,
        "seq": seq,
        "time": rfc3339(notice.at),
        "text": "oomguard: " + summary(notice),
        **notice_fields(notice),
    }


def sign(secret: bytes, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` (for receivers; constant time)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


@dataclass(frozen=True)
class _Delivery:
    event: str
    seq: int
    notice: Notice


class _Receiver:
    """One URL: its outbox, its HTTP client, its retries."""

    def __init__(self, url: str, owner: WebhookNotifier) -> None:
        self.url = url
        self.owner = owner
        self.outbox: Outbox[_Delivery] = Outbox(
            f"webhook {url}", self._deliver, owner.queue_size, weigh=_weigh
        )
        self.client = httpx.Client(
            timeout=owner.timeout,
            headers={"User-Agent": "oomguard", "Content-Type": "application/json"},
            transport=owner.transport,
        )
        self.down_since: float | None = None

    def _deliver(self, item: _Delivery) -> bool:
        owner = self.owner
        delivery_id = f"{owner.run_id}-{item.seq}"
        body = json.dumps(webhook_body(item.event, item.notice, item.seq, delivery_id)).encode()
        headers = {EVENT_HEADER: item.event, DELIVERY_HEADER: delivery_id}
        if owner.secret is not None:
            headers[SIGNATURE_HEADER] = sign(owner.secret, body)
        delay = owner.backoff
        refused = 0
        while True:
            wait = delay
            try:
                response = self.client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as err:
                self._down(f"{type(err).__name__}: {err}")
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self._up()
                    return True
                if status in RETRY_STATUSES:
                    self._down(f"HTTP {status}")
                    wait = max(delay, _retry_after(response))
                else:
                    refused += 1
                    if refused >= REFUSED_TRIES:
                        log.warning(
                            "webhook %s refused notification %s (HTTP %d, %d tries): skipped",
                            self.url,
                            delivery_id,
                            status,
                            refused,
                        )
                        return False
            if self.outbox.wait(min(wait, owner.backoff_max)):
                return False  # closing, and out of time
            delay = min(delay * 2, owner.backoff_max)

    def _down(self, reason: str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("webhook %s: %s; retrying with backoff", self.url, reason)

    def _up(self) -> None:
        if self.down_since is not None:
            log.warning(
                "webhook %s: delivering again after %.1f s",
                self.url,
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
    """POSTs notifications to ``urls`` (see the module docstring)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        on: Sequence[str] = ("final", "job"),
        secret: bytes | None = None,
        queue_size: int = 1000,
        timeout: float = 5.0,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.on = tuple(on)
        self.secret = secret
        self.queue_size = queue_size
        self.timeout = timeout
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.transport = transport
        #: names this process's deliveries: ``id`` is ``<run_id>-<seq>``
        self.run_id = uuid.uuid4().hex[:12]
        self._seq = 0
        self.receivers = [_Receiver(url, self) for url in urls]
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
        return {r.url: r.outbox.stats() for r in self.receivers}


__all__ = [
    "NOTIFY_ON",
    "SIGNATURE_HEADER",
    "WebhookNotifier",
    "event_name",
    "sign",
    "verify",
    "webhook_body",
]
