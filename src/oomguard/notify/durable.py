"""Webhooks delivered from the store's outbox: nothing told is lost to a restart.

A scheduler with a store (every ``oomguard run`` and ``serve``) writes the notices its
webhooks are to get into the store's outbox (:mod:`oomguard.store.outbox`) in the
transaction that records what caused them: a failed attempt's notice with the attempt's
end (:meth:`DurableWebhooks.keeps` says which; :mod:`oomguard.scheduler.notices` queues
the write), a job's notice as the loop sees the job change. One thread per receiver reads
the rows after its cursor, POSTs each (retried with backoff as :mod:`webhook` does) and
moves its cursor past it once delivered or refused for good. Stopping waits for the
receivers to catch up until its deadline; what is left stays in the store, and the next
scheduler on the store delivers it, each row once per receiver (its ``webhook-id``,
``<store name>-<row id>``, is the same on every try). The outbox is bounded on disk: rows
every receiver has passed are deleted, and past ``most`` rows the oldest are dropped and
counted (``oomguard_notifications_dropped`` in ``/metrics``). See docs/ARCHITECTURE.md
("Notifications").
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence

import httpx

from oomguard.notify.notice import AttemptNotice, JobNotice, Notice, from_json, to_json
from oomguard.notify.secrets import Redactor
from oomguard.notify.webhook import _Receiver, event_name
from oomguard.store.factory import open_store
from oomguard.store.outbox import receiver_key
from oomguard.store.protocol import Store

log = logging.getLogger("oomguard.notify")

#: rows read at a time
BATCH = 100
#: seconds between looks at the outbox when nothing woke a receiver
POLL = 1.0
#: rows the outbox holds at most (then the oldest are dropped, counted)
OUTBOX_ROWS = 100_000
#: seconds a scheduler's hold of a receiver's cursor lasts past its last renewal
HOLD = 30.0


class _Stored(_Receiver):
    """One URL delivering from the outbox, on a thread of its own with its own store
    connection."""

    def __init__(self, url: str, n: int, owner: DurableWebhooks) -> None:
        super().__init__(url, n, owner)
        self.durable = owner
        self.key = receiver_key(url)
        self.wake = threading.Event()
        self.delivered = 0
        self.skipped = 0
        #: the last outbox id passed (-1: not read yet)
        self.cursor = -1
        self.thread = threading.Thread(target=self._run, name=f"oomguard-webhook-{n}", daemon=True)

    def _run(self) -> None:
        owner = self.durable
        store = open_store(owner.store_path)
        try:
            cursor = self.cursor = store.outbox.cursor(self.key)
            while True:
                # One scheduler at a time delivers to a receiver (replicas share the store):
                # the one holding its cursor, renewed at each batch; the others wait.
                held = store.outbox.hold(self.key, owner.holder, owner.hold_seconds)
                if held is None:
                    if owner.closing.is_set():
                        return  # another scheduler delivers them
                    self.wake.wait(owner.poll)
                    self.wake.clear()
                    continue
                cursor = self.cursor = max(cursor, held)
                rows = store.outbox.after(cursor, BATCH)
                if not rows:
                    if owner.closing.is_set():
                        return  # caught up: what was written before the close is out
                    self.wake.wait(owner.poll)
                    self.wake.clear()
                    continue
                for row in rows:
                    notice = from_json(row.kind, row.notice)
                    event = event_name(notice, owner.on)
                    if event is not None:
                        delivery_id = f"{owner.name}-{row.id}"
                        posted = self.post(event, notice, row.id, delivery_id, owner.abandon.wait)
                        if posted is None:
                            return  # out of time: left in the outbox for the next start
                        if posted:
                            self.delivered += 1
                        else:
                            self.skipped += 1
                    cursor = self.cursor = row.id
                    store.outbox.advance(self.key, cursor)
        except Exception:
            log.exception("webhook %s: delivering from the outbox failed", self.name)
        finally:
            store.close()
            self.client.close()


class DurableWebhooks:
    """POSTs to ``urls`` what the store at ``store_path`` keeps in its outbox (see the
    module docstring); ``notify`` writes job notices there and wakes the receivers."""

    def __init__(
        self,
        store_path: str,
        urls: Sequence[str],
        *,
        on: Sequence[str] = ("final", "job"),
        keys: Sequence[bytes] = (),
        redactor: Redactor | None = None,
        timeout: float = 5.0,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        most: int = OUTBOX_ROWS,
        poll: float = POLL,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.store_path = store_path
        self.on = tuple(on)
        self.keys = tuple(keys)
        self.redactor = redactor if redactor is not None else Redactor()
        self.queue_size = 1  # the receivers' in-memory queues are not used
        self.timeout = timeout
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.most = most
        self.poll = poll
        self.transport = transport
        self.closing = threading.Event()
        self.abandon = threading.Event()
        #: the scheduler delivering (:meth:`start`), and how long its holds last
        self.holder = ""
        self.hold_seconds = HOLD
        self._stores = threading.local()
        self._opened: list[Store] = []
        self._opened_lock = threading.Lock()
        store = open_store(store_path)
        try:
            self.name = store.outbox.name()
        finally:
            store.close()
        self.run_id = self.name
        self.receivers = [_Stored(url, n, self) for n, url in enumerate(urls, 1)]
        self._trimmer = threading.Thread(
            target=self._trim_loop, name="oomguard-outbox-trim", daemon=True
        )

    def start(self, holder: str | None = None, hold_seconds: float = HOLD) -> None:
        """Start delivering, once scheduler ``holder`` registered on the store: each
        receiver delivers while it holds that receiver's cursor (one scheduler at a time:
        replicas would deliver every row twice), renewed each batch, for ``hold_seconds``
        at most past the last renewal (a dead holder is let go of at its takeover)."""
        if self._trimmer.ident is not None:
            return
        self.holder = holder if holder is not None else uuid.uuid4().hex
        self.hold_seconds = hold_seconds
        for receiver in self.receivers:
            receiver.thread.start()
        self._trimmer.start()

    def _trim_loop(self) -> None:
        # Its own thread: a receiver stuck on a dead URL must not leave the outbox unbounded,
        # and the scheduler's loop never waits for it.
        store = open_store(self.store_path)
        try:
            while True:
                try:
                    self.trim(store)
                except Exception:
                    log.exception("the notification outbox could not be trimmed")
                if self.closing.wait(self.poll):
                    return
        finally:
            store.close()

    def keeps(self, notice: AttemptNotice) -> bool:
        """Whether the outbox is to hold ``notice`` (written with the attempt's end)."""
        return event_name(notice, self.on) is not None

    def notify(self, notice: Notice) -> None:
        """A job's notice is written to the outbox here; an attempt's was written with
        its commit. Either way the receivers look now."""
        if isinstance(notice, JobNotice) and event_name(notice, self.on) is not None:
            kind, text = to_json(notice)
            self._store().outbox.add(notice.at, kind, text)
        for receiver in self.receivers:
            receiver.wake.set()

    def _store(self) -> Store:
        store: Store | None = getattr(self._stores, "store", None)
        if store is None:
            store = open_store(self.store_path)
            self._stores.store = store
            with self._opened_lock:
                self._opened.append(store)
        return store

    def trim(self, store: Store) -> None:
        dropped = store.outbox.trim([r.key for r in self.receivers], self.most)
        if dropped:
            log.warning(
                "the notification outbox held more than %d notices: the %d oldest were "
                "dropped (counted in oomguard_notifications_dropped)",
                self.most,
                dropped,
            )

    def close(self, timeout: float) -> None:
        """Deliver what the outbox holds for at most ``timeout`` seconds; what is left is
        delivered by the next scheduler on the store."""
        deadline = time.monotonic() + timeout
        self.closing.set()
        for receiver in self.receivers:
            receiver.wake.set()
        started = [r for r in self.receivers if r.thread.ident is not None]
        for receiver in started:
            receiver.thread.join(max(0.0, deadline - time.monotonic()))
        if any(r.thread.is_alive() for r in started):
            self.abandon.set()
            for receiver in started:
                receiver.thread.join(2.0)
        store = open_store(self.store_path)
        try:
            for receiver in started:
                left = store.outbox.count_after(receiver.cursor) if receiver.cursor >= 0 else 0
                if left:
                    log.warning(
                        "webhook %s: %d delivered, %d not delivered before the stop: they "
                        "stay in the store, and the next start delivers them",
                        receiver.name,
                        receiver.delivered,
                        left,
                    )
        finally:
            store.close()
        self._trimmer.join(5.0)
        with self._opened_lock:
            # The connections notify() opened (on the loop's thread): closed with the rest.
            opened, self._opened = self._opened, []
        for one in opened:
            one.close()

    def stats(self) -> dict[str, tuple[int, int]]:
        """(delivered, skipped) by receiver name (number, scheme and host)."""
        return {r.name: (r.delivered, r.skipped) for r in self.receivers}


__all__ = ["OUTBOX_ROWS", "DurableWebhooks"]
