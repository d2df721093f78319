"""The notification seam: the :class:`Notifier` protocol, the bounded :class:`Outbox`
every channel delivers from, a fan-out, and a recording fake.

The scheduler loop calls :meth:`Notifier.notify` with a frozen notice; that call appends to
a bounded queue and returns. A thread per channel (per webhook URL) drains the queue, so a
slow or dead receiver never slows the loop, and a queue that is full drops what comes next
and counts it: notifications never cost the scheduler more than the queue's bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from oomguard.notify.notice import Notice

log = logging.getLogger("oomguard.notify")

T = TypeVar("T")

#: the most bytes of notices (their text: messages, tracebacks, kernel lines) one outbox
#: holds, whatever its count bound: a dead receiver costs at most this much
QUEUE_BYTES = 16 * 1024 * 1024


class Notifier(Protocol):
    """Where notices go. ``notify`` is called on the scheduler loop's thread: it must not
    block and must not raise."""

    def notify(self, notice: Notice) -> None:
        """Take one notice (queue it, or drop and count it)."""

    def close(self, timeout: float) -> None:
        """Deliver what is queued for at most ``timeout`` seconds, then stop."""


@dataclass(frozen=True)
class OutboxStats:
    #: notices accepted into the queue
    queued: int
    #: notices dropped because the queue was full
    dropped: int
    #: notices delivered
    delivered: int
    #: notices given up on (refused by the receiver, or still queued when it closed)
    failed: int
    #: notices waiting now
    waiting: int


class Outbox(Generic[T]):
    """A queue of at most ``size`` items drained in order by one thread calling
    ``deliver(item)``.

    ``put`` never blocks: past ``size`` items, or ``max_bytes`` as ``weigh`` counts them,
    the item is dropped and counted. ``deliver`` may
    take its time (retries with backoff); it should wait with :meth:`wait` so that
    :meth:`close` can cut it short at its deadline. ``deliver`` returns True when the item
    was delivered, False when it gave up on it.
    """

    def __init__(
        self,
        name: str,
        deliver: Callable[[T], bool],
        size: int,
        *,
        weigh: Callable[[T], int] | None = None,
        max_bytes: int = QUEUE_BYTES,
    ) -> None:
        self.name = name
        self.size = max(1, size)
        self.max_bytes = max_bytes
        self._weigh = weigh
        self._deliver = deliver
        self._items: deque[T] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._closing = False
        #: set at the close deadline: deliveries in progress give up
        self.abandon = threading.Event()
        self._thread: threading.Thread | None = None
        self._queued = self._dropped = self._delivered = self._failed = 0
        self._warned = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"oomguard-{self.name}", daemon=True)
        self._thread.start()

    def put(self, item: T) -> bool:
        """Queue ``item``; False (dropped and counted) when the queue is full or closed."""
        weight = self._weigh(item) if self._weigh is not None else 0
        with self._cond:
            full = len(self._items) >= self.size or (
                self._items and self._bytes + weight > self.max_bytes
            )
            if self._closing or full:
                self._dropped += 1
                warn = not self._warned
                self._warned = True
            else:
                self._items.append(item)
                self._bytes += weight
                self._queued += 1
                self._cond.notify()
                return True
        if warn:
            log.warning(
                "%s: %d notification(s) waiting (the most kept: %d, %d bytes); newer ones "
                "are dropped and counted until it catches up",
                self.name,
                len(self._items),
                self.size,
                self.max_bytes,
            )
        return False

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when the outbox is abandoned (give up now)."""
        return self.abandon.wait(seconds)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items or self.abandon.is_set():
                    return
                item = self._items[0]
            try:
                ok = self._deliver(item)
            except Exception:
                log.exception("%s: a notification could not be delivered", self.name)
                ok = False
            with self._cond:
                self._items.popleft()
                if self._weigh is not None:
                    self._bytes -= self._weigh(item)
                if ok:
                    self._delivered += 1
                else:
                    self._failed += 1
                if self._warned and not self._items:
                    self._warned = False  # warn again at the next overflow

    def stop_taking(self) -> None:
        """Take no more items (those queued are still delivered)."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    @property
    def alive(self) -> bool:
        """Whether its thread still runs (a delivery may be stuck past the deadline)."""
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float) -> OutboxStats:
        """Stop taking items; deliver what is queued for at most ``timeout`` seconds."""
        self.stop_taking()
        if self._thread is not None:
            self._thread.join(max(0.0, timeout))
            if self._thread.is_alive():
                self.abandon.set()
                self._thread.join(1.0)
        stats = self.stats()
        lost = stats.dropped + stats.failed + stats.waiting
        if lost:
            log.warning(
                "%s: %d notification(s) delivered, %d dropped (queue full), %d not delivered",
                self.name,
                stats.delivered,
                stats.dropped,
                stats.failed + stats.waiting,
            )
        return stats

    def stats(self) -> OutboxStats:
        with self._cond:
            return OutboxStats(
                queued=self._queued,
                dropped=self._dropped,
                delivered=self._delivered,
                failed=self._failed,
                waiting=len(self._items),
            )


class Fanout:
    """Every notice to every notifier; closes them all within one deadline."""

    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self.notifiers = list(notifiers)

    def notify(self, notice: Notice) -> None:
        for notifier in self.notifiers:
            try:
                notifier.notify(notice)
            except Exception:  # a notifier's bug never fails an attempt
                log.exception("notifier %s failed", type(notifier).__name__)

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        # Close them side by side: each gets the whole deadline, not what the others left.
        threads = [
            threading.Thread(target=_close, args=(n, deadline), daemon=True) for n in self.notifiers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 2.0)


def _close(notifier: Notifier, deadline: float) -> None:
    try:
        notifier.close(max(0.0, deadline - time.monotonic()))
    except Exception:
        log.exception("notifier %s could not be closed", type(notifier).__name__)


class MemoryNotifier:
    """A notifier that keeps every notice in a list (tests, and embedding applications
    that want the notices in-process)."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []
        self.closed = False

    def notify(self, notice: Notice) -> None:
        self.notices.append(notice)

    def close(self, timeout: float) -> None:
        self.closed = True
