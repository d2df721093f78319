"""Replicates' results held on the Dask worker that made them, for their aggregation.

Every result goes back to the scheduler and into the store, durably, as before. A Dask
worker running attempts in children (not ``thread`` mode) also *holds* the results of
tasks whose job has an aggregation (the item says ``hold``):
:class:`~.remote.held.HeldResults`, in the Dask worker's process, keyed by attempt,
bounded by the memory no attempt was admitted to on that worker
(:meth:`~.remote.held.HeldResults.fit`), oldest dropped first. The answer says which
results it holds, and which it dropped (``held``, ``dropped``). That side lives with the
worker (:mod:`oomguard.executors.dask.remote.held`); this module is the executor's.

The executor keeps where each is (:class:`HeldIndex`). When an aggregation's item is read
(:func:`~oomguard.scheduler.items.call_item`), the replicates whose *stored* result is the
one of an attempt held on a worker (the store's ``results.attempt_id``) are sent as a
:class:`~oomguard.worker.calls.HeldRef` instead of their bytes, and the Dask task goes to
the worker holding most of them; it takes the others straight from the workers holding
them (:func:`~.remote.tasks.run_calls` ``peers``: one transfer between two workers, as Dask
moves a task's dependencies). The results are neither read back from the store nor
shipped through this process and the Dask scheduler again. A held
result is used once (taken from both sides); a retry of the aggregation reads the store.
A worker that no longer holds one (dropped, restarted) answers ``missing`` before running
anything, and the group's attempts are requeued, to be read from the store next time.
See docs/ARCHITECTURE.md ("Dask").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from oomguard.executors.dask.remote.answers import GroupAnswer
from oomguard.worker.calls import CallItem, held_refs

#: the most attempts the executor remembers as held (a safety bound; workers drop sooner)
INDEX_MAX = 100_000


class HeldIndex:
    """In the executor: which Dask worker holds which attempt's result, and its size."""

    def __init__(self) -> None:
        self._at: OrderedDict[int, tuple[str, int]] = OrderedDict()
        #: where each result taken for an item is (until the item is sent: :meth:`peers`)
        self._taken: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._at)

    def saw(self, address: str, out: GroupAnswer) -> None:
        """Note what a group's answer from ``address`` says it holds and dropped."""
        held = set(out.held)
        for outcome in out.outcomes if held else ():
            if outcome.attempt_id in held:
                self._at[outcome.attempt_id] = (address, len(outcome.payload or b""))
        for attempt_id in out.dropped:
            self._at.pop(attempt_id, None)
        while len(self._at) > INDEX_MAX:
            self._at.popitem(last=False)

    def forget_worker(self, address: str) -> None:
        for attempt_id in [a for a, (at, _) in self._at.items() if at == address]:
            del self._at[attempt_id]

    def forget_workers_except(self, addresses: Iterable[str]) -> None:
        alive = set(addresses)
        for attempt_id in [a for a, (at, _) in self._at.items() if at not in alive]:
            del self._at[attempt_id]

    def __call__(self, attempt_ids: Sequence[int | None]) -> tuple[str | None, set[int]]:
        """The worker holding the most bytes of these attempts' results, and those of them
        held on any worker (taken from the index: each held result is sent for once; where
        each is, :meth:`peers` says)."""
        by_worker: dict[str, int] = {}
        for attempt_id in attempt_ids:
            at = self._at.get(attempt_id) if attempt_id is not None else None
            if at is not None:
                by_worker[at[0]] = by_worker.get(at[0], 0) + at[1]
        if not by_worker:
            return None, set()
        address = max(by_worker, key=lambda a: by_worker[a])
        taken = set()
        for attempt_id in attempt_ids:
            at = self._at.pop(attempt_id, None) if attempt_id is not None else None
            if attempt_id is not None and at is not None:
                taken.add(attempt_id)
                self._taken[attempt_id] = at[0]
        while len(self._taken) > INDEX_MAX:  # items read and never sent
            self._taken.popitem(last=False)
        return address, taken

    def peers(self, items: Iterable[CallItem]) -> dict[int, str]:
        """Where each result ``items`` refer to as held is (forgotten here)."""
        out = {}
        for item in items:
            for attempt_id in held_refs(item):
                at = self._taken.pop(attempt_id, None)
                if at is not None:
                    out[attempt_id] = at
        return out


__all__ = ["HeldIndex"]
