"""Replicates' results held on the Dask worker that made them, for their aggregation: the
worker's side (:class:`HeldResults`); the executor keeps where each is
(:class:`~oomguard.executors.dask.held.HeldIndex`, which describes the whole scheme).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import replace

from oomguard.executors.dask.remote.answers import Outcome
from oomguard.worker.calls import AggregateCall, CallItem, HeldRef, held_refs

#: the most of a Dask worker's memory its held results may use (docs/ARCHITECTURE.md, "Dask")
HOLD_FRACTION = 0.25


class HeldResults:
    """On a Dask worker: results held for their aggregation, by attempt id (thread-safe)."""

    def __init__(self) -> None:
        self._results: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        #: attempts dropped since the last :meth:`take_dropped`
        self._dropped: list[int] = []

    def __len__(self) -> int:
        return len(self._results)

    def put(self, attempt_id: int, payload: bytes) -> None:
        with self._lock:
            if attempt_id not in self._results:
                self._results[attempt_id] = payload
                self.bytes += len(payload)

    def fit(self, room: int) -> None:
        """Drop the oldest until at most ``room`` bytes are held."""
        with self._lock:
            while self._results and self.bytes > max(room, 0):
                attempt_id, payload = self._results.popitem(last=False)
                self.bytes -= len(payload)
                self._dropped.append(attempt_id)

    def take(self, attempt_ids: Iterable[int]) -> dict[int, bytes]:
        """Those of ``attempt_ids`` held here, taken (for another worker's aggregation)."""
        with self._lock:
            got = {a: self._results.pop(a) for a in attempt_ids if a in self._results}
            self.bytes -= sum(len(v) for v in got.values())
        return got

    def take_dropped(self) -> list[int]:
        with self._lock:
            dropped, self._dropped = self._dropped, []
        return dropped

    def resolve(self, items: Sequence[CallItem]) -> list[CallItem] | None:
        """The items with the held results they refer to put in (taken from here); None,
        with nothing taken, when one of them is not held here."""
        wanted = [a for item in items for a in held_refs(item)]
        if not wanted:
            return list(items)
        with self._lock:
            if any(a not in self._results for a in wanted):
                return None
            got = {a: self._results.pop(a) for a in wanted}
            self.bytes -= sum(len(v) for v in got.values())
        return [_filled(item, got) for item in items]

    def keep(self, items: Sequence[CallItem], outcomes: Iterable[Outcome], room: int) -> list[int]:
        """Hold the results of the items that ask for it (``hold``), then :meth:`fit` in
        ``room``; return the ids of those held."""
        asked = {item.attempt_id for item in items if item.hold}
        kept = []
        for outcome in outcomes:
            payload = outcome.payload
            if outcome.attempt_id in asked and outcome.ok and payload is not None:
                self.put(outcome.attempt_id, payload)
                kept.append(outcome.attempt_id)
        self.fit(room)
        return kept

    def clear(self) -> None:
        with self._lock:
            self._results.clear()
            self.bytes = 0
            self._dropped.clear()


def _filled(item: CallItem, got: dict[int, bytes]) -> CallItem:
    """``item`` with the results it refers to as held replaced by their bytes in ``got``."""
    if not isinstance(item, AggregateCall) or not held_refs(item):
        return item
    results = tuple(got[r.attempt_id] if isinstance(r, HeldRef) else r for r in item.results)
    return replace(item, results=results)


def refers(item: CallItem) -> bool:
    """Whether ``item`` refers to a result held on a worker."""
    return bool(held_refs(item))


__all__ = ["HeldResults", "refers"]
