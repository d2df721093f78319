"""Backpressure for the HTTP server: pending-task quotas and the scheduler's own memory.

Pure logic with no I/O, so it is unit-tested without processes:

* :class:`PendingCounter` keeps the number of *pending* tasks (accepted, not finished) for
  the whole server and per namespace: the store's count at the last periodic sync
  (:meth:`PendingCounter.sync`, a cheap query) plus the reservations made since, counted
  apart so that a sync never drops one still being written. A request never scans the
  store.
* :class:`MemoryPressure` turns RSS samples of the server process into an on/off pressure
  signal with hysteresis (on above the high-water mark, off again below the low one).
* :class:`Backpressure` combines both, the namespace quotas and the number of namespaces
  into one decision per submission:
  :meth:`Backpressure.reserve` either reserves room for a whole batch or raises
  :class:`~oomguard.errors.BackpressureError` with a ``code`` and ``retry_after``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from oomguard.errors import BackpressureError, too_many_namespaces
from oomguard.units import format_size

#: Retry-After (seconds) proposed to clients for each refusal code
RETRY_AFTER = {
    "queue_full": 1.0,
    "namespace_quota": 1.0,
    "scheduler_memory_pressure": 2.0,
    "too_many_namespaces": 1.0,
}


class PendingCounter:
    """Accepted-but-unfinished tasks, total and per namespace (thread-safe).

    Counted in two parts, so that a sync never drops a reservation whose tasks are still
    being written (the store shows them only in part, or not yet):

    * the **base**: the store's open tasks at the last sync, of the jobs that were written
      whole before that sync began;
    * the **reservations**, by job: those being written (:meth:`hold` until
      :meth:`written` or :meth:`release`), and those written since the last sync began,
      each counted whole.

    A sync (:meth:`begin_sync`, count the store, :meth:`sync`) skips in the store's count
    every job it holds a reservation for, and keeps those reservations. Tasks that finish
    meanwhile are counted until the next sync: an over-estimate, which errs on the side of
    refusing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._base_total = 0
        self._base_ns: dict[str, int] = {}
        #: job -> (namespace, tasks, generation written in; None while being written)
        self._held: dict[str, tuple[str, int, int | None]] = {}
        self._held_total = 0
        self._held_ns: dict[str, int] = {}
        self._generation = 0

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def total(self) -> int:
        return self._base_total + self._held_total

    def namespace(self, ns: str) -> int:
        return self._base_ns.get(ns, 0) + self._held_ns.get(ns, 0)

    def namespaces(self) -> set[str]:
        """The namespaces with pending tasks."""
        with self._lock:
            return self.active()

    def active(self) -> set[str]:
        """The namespaces with pending tasks. Hold :attr:`lock`."""
        return {ns for ns, n in self._base_ns.items() if n} | {
            ns for ns, n in self._held_ns.items() if n
        }

    def hold(self, job: str, ns: str, n: int) -> None:
        """Reserve ``n`` tasks of ``job`` in ``ns`` while they are written. Hold :attr:`lock`."""
        self._held[job] = (ns, n, None)
        self._add(ns, n)

    def written(self, job: str) -> None:
        """``job``'s tasks are all in the store: a sync begun from now on counts them."""
        with self._lock:
            held = self._held.get(job)
            if held is not None:
                self._held[job] = (held[0], held[1], self._generation)

    def release(self, job: str) -> None:
        """Give ``job``'s reservation back (its tasks were not accepted)."""
        with self._lock:
            held = self._held.pop(job, None)
            if held is not None:
                self._add(held[0], -held[1])

    def _add(self, ns: str, n: int) -> None:
        self._held_total += n
        left = self._held_ns.get(ns, 0) + n
        if left:
            self._held_ns[ns] = left
        else:
            self._held_ns.pop(ns, None)

    def begin_sync(self) -> int:
        """Call just before counting the store's open tasks; pass the mark to :meth:`sync`."""
        with self._lock:
            self._generation += 1
            return self._generation

    def sync(self, mark: int, open_by_job: Mapping[str, tuple[str, int]]) -> None:
        """Replace the base with the store's open tasks by job (``job -> (namespace, n)``),
        counted after :meth:`begin_sync` returned ``mark``."""
        with self._lock:
            # Written whole before the count began: the count has them; drop the reservation.
            for job, (ns, n, generation) in list(self._held.items()):
                if generation is not None and generation < mark:
                    del self._held[job]
                    self._add(ns, -n)
            base: dict[str, int] = {}
            for job, (ns, n) in open_by_job.items():
                if n and job not in self._held:
                    base[ns] = base.get(ns, 0) + n
            self._base_ns = base
            self._base_total = sum(base.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            names = set(self._base_ns) | set(self._held_ns)
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
    #: namespaces without a quota that may have pending tasks at once (None: any number)
    max_namespaces: int | None = None

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
    def reserve(self, namespace: str, n: int, job: str) -> Iterator[None]:
        """Reserve room for ``n`` tasks of ``job`` in ``namespace`` for the ``with`` block.

        Raises :class:`BackpressureError` when the batch does not fit whole. When the
        block raises, the reservation is given back (the tasks were not stored); when it
        ends, the tasks are counted as written.
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
            if quota is None and self.max_namespaces is not None:
                others = counter.active() - set(self.namespace_quotas)
                if namespace not in others and len(others) >= self.max_namespaces:
                    raise too_many_namespaces(
                        len(others),
                        self.max_namespaces,
                        namespace,
                        RETRY_AFTER["too_many_namespaces"],
                    )
            counter.hold(job, namespace, n)
        try:
            yield
        except BaseException:
            counter.release(job)
            raise
        counter.written(job)


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
