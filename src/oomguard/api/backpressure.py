"""Backpressure for the HTTP server: pending-task quotas and the scheduler's own memory.

Pure logic with no I/O, so it is unit-tested without processes:

* :class:`PendingCounter` keeps the number of *pending* tasks (accepted, not finished) for
  the whole server and per namespace. It is initialised and corrected from the store by a
  cheap periodic count (:meth:`PendingCounter.sync`) and raised on every accept, so a
  request never scans the store.
* :class:`MemoryPressure` turns RSS samples of the server process into an on/off pressure
  signal with hysteresis (on above the high-water mark, off again below the low one).
* :class:`Backpressure` combines both into one decision per submission:
  :meth:`Backpressure.reserve` either reserves room for a whole batch or raises
  :class:`~oomguard.errors.BackpressureError` with a ``code`` and ``retry_after``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from oomguard.errors import BackpressureError
from oomguard.units import format_size

#: Retry-After (seconds) proposed to clients for each refusal code
RETRY_AFTER = {
    "queue_full": 1.0,
    "namespace_quota": 1.0,
    "scheduler_memory_pressure": 2.0,
}


class PendingCounter:
    """Accepted-but-unfinished tasks, total and per namespace (thread-safe).

    The count is ``base`` (open tasks the store held at the last sync) plus what was
    accepted since that sync started. Tasks committed while a sync runs may be counted
    twice until the next sync: an over-estimate, which errs on the side of refusing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._base_total = 0
        self._base_ns: dict[str, int] = {}
        self._accepted_total = 0
        self._accepted_ns: dict[str, int] = {}
        # accepted counts when the current sync began (the store reflects at least those)
        self._mark_total = 0
        self._mark_ns: dict[str, int] = {}

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def total(self) -> int:
        return self._base_total + self._accepted_total

    def namespace(self, ns: str) -> int:
        return self._base_ns.get(ns, 0) + self._accepted_ns.get(ns, 0)

    def add(self, ns: str, n: int) -> None:
        """Count ``n`` tasks accepted (or, with ``n < 0``, given back). Hold :attr:`lock`."""
        self._accepted_total += n
        self._accepted_ns[ns] = self._accepted_ns.get(ns, 0) + n

    def begin_sync(self) -> None:
        """Call just before counting the store's open tasks."""
        with self._lock:
            self._mark_total = self._accepted_total
            self._mark_ns = dict(self._accepted_ns)

    def sync(self, open_by_namespace: Mapping[str, int]) -> None:
        """Replace the base with the store's count of open tasks taken since :meth:`begin_sync`."""
        with self._lock:
            self._base_ns = {ns: n for ns, n in open_by_namespace.items() if n}
            self._base_total = sum(self._base_ns.values())
            self._accepted_total -= self._mark_total
            for ns, n in self._mark_ns.items():
                left = self._accepted_ns.get(ns, 0) - n
                if left:
                    self._accepted_ns[ns] = left
                else:
                    self._accepted_ns.pop(ns, None)
            self._mark_total = 0
            self._mark_ns = {}

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            names = set(self._base_ns) | set(self._accepted_ns)
            return {ns: self.namespace(ns) for ns in sorted(names)}


@dataclass
class MemoryPressure:
    """On above ``high`` * limit, off again only below ``low`` * limit (hysteresis)."""

    limit_bytes: int
    high: float = 0.80
    low: float = 0.70
    active: bool = False
    last_rss: int = 0
    peak_rss: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high <= 1:
            raise ValueError("need 0 < low < high <= 1")

    @property
    def high_bytes(self) -> int:
        return int(self.limit_bytes * self.high)

    @property
    def low_bytes(self) -> int:
        return int(self.limit_bytes * self.low)

    def update(self, rss: int) -> bool:
        """Feed one RSS sample; return whether pressure is on."""
        self.last_rss = rss
        self.peak_rss = max(self.peak_rss, rss)
        if self.active:
            if rss < self.low_bytes:
                self.active = False
        elif rss >= self.high_bytes:
            self.active = True
        return self.active


@dataclass
class Backpressure:
    """The decision to accept or refuse a submission of ``n`` tasks into a namespace."""

    max_pending: int | None = None
    namespace_quotas: dict[str, int] = field(default_factory=dict)
    pressure: MemoryPressure | None = None
    pending: PendingCounter = field(default_factory=PendingCounter)

    def check_memory(self) -> None:
        if self.pressure is not None and self.pressure.active:
            p = self.pressure
            raise BackpressureError(
                f"the scheduler is using {format_size(p.last_rss)} of its "
                f"{format_size(p.limit_bytes)} limit (over {p.high:.0%}): retry later",
                code="scheduler_memory_pressure",
                retry_after=RETRY_AFTER["scheduler_memory_pressure"],
            )

    @contextmanager
    def reserve(self, namespace: str, n: int) -> Iterator[None]:
        """Reserve room for ``n`` tasks in ``namespace`` for the ``with`` block.

        Raises :class:`BackpressureError` when the batch does not fit whole. When the
        block raises, the reservation is given back (the tasks were not stored).
        """
        self.check_memory()
        counter = self.pending
        with counter.lock:
            if self.max_pending is not None and counter.total() + n > self.max_pending:
                raise BackpressureError(
                    f"the server has {counter.total()} pending tasks; {n} more would exceed "
                    f"--max-pending-tasks {self.max_pending}: retry later",
                    code="queue_full",
                    retry_after=RETRY_AFTER["queue_full"],
                    pending=counter.total(),
                    limit=self.max_pending,
                )
            quota = self.namespace_quotas.get(namespace)
            if quota is not None and counter.namespace(namespace) + n > quota:
                raise BackpressureError(
                    f"namespace {namespace!r} has {counter.namespace(namespace)} pending tasks; "
                    f"{n} more would exceed its quota of {quota}: retry later",
                    code="namespace_quota",
                    retry_after=RETRY_AFTER["namespace_quota"],
                    pending=counter.namespace(namespace),
                    limit=quota,
                )
            counter.add(namespace, n)
        try:
            yield
        except BaseException:
            with counter.lock:
                counter.add(namespace, -n)
            raise


def parse_quotas(items: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``["ns=100", ...]`` → ``{"ns": 100}``; raises ValueError with a clear message."""
    quotas: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"namespace quota {item!r} is not NS=N")
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"namespace quota {item!r}: {value!r} is not a whole number") from None
        if n < 0:
            raise ValueError(f"namespace quota {item!r} must not be negative")
        quotas[name] = n
    return quotas


__all__ = ["RETRY_AFTER", "Backpressure", "MemoryPressure", "PendingCounter", "parse_quotas"]
