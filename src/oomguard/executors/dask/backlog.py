"""The Dask executor's backlog: groups of attempts waiting to be sent as Dask tasks.

A scheduler group of short attempts is cut into Dask tasks of at most
:data:`GROUP_MAX_BYTES` of inputs (aggregations carry their replicates' results) and of
:data:`GROUP_UNSEEN_ITEMS` attempts. Where every Dask worker runs attempts in children
(not ``thread`` mode, where a worker's death costs its whole task) and a function's results
have been seen, up to :data:`GROUP_MAX_ITEMS`, holding about :data:`GROUP_MAX_RESULT_BYTES`
of results (they wait in the worker's memory until the last of them finishes;
:meth:`Backlog.saw`): each Dask task costs a round trip to the Dask scheduler and a hop to
the worker's child, so short tasks with small results go many to one.

Inputs are read from the store only when a Dask task is about to be sent
(:meth:`Backlog.take`): a wave of aggregations made ready at once must not all hold their
inputs in memory in the scheduler's process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence

from oomguard.errors import TaskInputError
from oomguard.executors.base import Attempt, Held, ItemReader, input_error_event
from oomguard.executors.dask.remote import THREAD
from oomguard.executors.dask.remote.answers import Outcome
from oomguard.executors.events import Event
from oomguard.worker.calls import CallItem, input_bytes

#: the most attempts in one Dask task
GROUP_MAX_ITEMS = 32
#: attempts in one Dask task before their function's results are seen, or in thread mode
GROUP_UNSEEN_ITEMS = 8
#: results of one Dask task held in the worker's memory, about (by the largest seen)
GROUP_MAX_RESULT_BYTES = 32 * 1024 * 1024
#: bytes of inputs in one Dask task (at least one attempt, whatever its size)
GROUP_MAX_BYTES = 16 * 1024 * 1024


class Backlog:
    """Groups of attempts waiting to be sent, first in first out.

    ``ended`` receives the event of an attempt whose inputs cannot be read (it ends as an
    error at once, and the rest of its group goes on).
    """

    def __init__(self, ended: Callable[[Event], None], held: Held | None = None) -> None:
        self._ended = ended
        #: where results are held on the workers (aggregations go where theirs are)
        self._held = held
        self._read_item: ItemReader | None = None
        #: (runs, limit, the first run's item when already read)
        self._groups: deque[tuple[Sequence[Attempt], int, CallItem | None]] = deque()
        #: the largest result seen of each (kind, function)
        self._result_bytes: dict[tuple[str, str] | None, int] = {}
        #: every Dask worker runs attempts in children (none in ``thread`` mode)
        self._isolated = False

    def __bool__(self) -> bool:
        return bool(self._groups)

    @property
    def attempts(self) -> int:
        """How many attempts wait."""
        return sum(len(runs) for runs, _, _ in self._groups)

    def add(self, group: Sequence[Attempt], limit: int, read_item: ItemReader) -> None:
        """Queue a scheduler group whose attempts share the admission ``limit``."""
        self._read_item = read_item
        per = self.items_per_task(group[0])
        for start in range(0, len(group), per):
            self._groups.append((group[start : start + per], limit, None))

    def saw(
        self,
        runs: Sequence[Attempt],
        outcomes: Sequence[Outcome],
        modes: Mapping[str, str],
    ) -> None:
        """Note the sizes of the results a Dask task of ``runs`` brought back, and the
        Dask workers' isolation ``modes`` (address -> mode) known so far."""
        self._isolated = bool(modes) and THREAD not in modes.values()
        by_id = {run.attempt_id: run for run in runs}
        for outcome in outcomes:
            run, payload = by_id.get(outcome.attempt_id), outcome.payload
            if run is None or payload is None:
                continue
            key = _function(run)
            self._result_bytes[key] = max(len(payload), self._result_bytes.get(key, 0))

    def items_per_task(self, run: Attempt) -> int:
        """How many attempts of ``run``'s function go in one Dask task."""
        seen = self._result_bytes.get(_function(run))
        if seen is None or not self._isolated:
            return GROUP_UNSEEN_ITEMS
        return max(1, min(GROUP_MAX_ITEMS, GROUP_MAX_RESULT_BYTES // max(seen, 1)))

    def clear(self) -> None:
        self._groups.clear()

    def take(self) -> tuple[list[Attempt], list[CallItem], int, str | None]:
        """The next Dask task's attempts, their call items, its limit and the worker it
        must go to (where results its items refer to are held), if any.

        Reads items up to :data:`GROUP_MAX_BYTES` of inputs (at least one), all for the
        same worker; the attempts left over go back to the front with the item that did
        not fit. The attempts may be none: none of them could be read, each ended with
        an error outcome.
        """
        runs, limit, first = self._groups.popleft()
        items: list[CallItem] = []
        sent: list[Attempt] = []
        size = 0
        at: str | None = None
        for i, run in enumerate(runs):
            if i == 0 and first is not None:
                item = first
            else:
                assert self._read_item is not None  # set by add, before any take
                try:
                    item = self._read_item(run, self._held)
                except TaskInputError as err:
                    self._ended(input_error_event(run, err))
                    continue
            item_size = input_bytes(item)
            elsewhere = at is not None and item.at not in (None, at)
            if items and (size + item_size > GROUP_MAX_BYTES or elsewhere):
                self._groups.appendleft((runs[i:], limit, item))
                break
            items.append(item)
            sent.append(run)
            size += item_size
            at = at or item.at
        return sent, items, limit, at


def _function(run: Attempt) -> tuple[str, str] | None:
    """What an attempt's results are sized by: its task's kind and function."""
    task = getattr(run, "task", None)
    return None if task is None else (task.kind, task.fn)


__all__ = ["GROUP_MAX_BYTES", "GROUP_MAX_ITEMS", "GROUP_MAX_RESULT_BYTES", "Backlog"]
