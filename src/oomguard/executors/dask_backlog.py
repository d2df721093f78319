"""The Dask executor's backlog: groups of attempts waiting to be sent as Dask tasks.

A scheduler group of short attempts is cut into Dask tasks of at most
:data:`GROUP_MAX_ITEMS` attempts (their results wait in the worker's memory until the last
of them finishes) and of at most :data:`GROUP_MAX_BYTES` of inputs (aggregations carry
their replicates' results). Inputs are read from the store only when a Dask task is about
to be sent (:meth:`Backlog.take`): a wave of aggregations made ready at once must not all
hold their inputs in memory in the scheduler's process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from oomguard.errors import TaskInputError
from oomguard.executors.base import Attempt, ItemReader, input_error_event
from oomguard.executors.events import Event

#: attempts in one Dask task
GROUP_MAX_ITEMS = 8
#: bytes of inputs in one Dask task (at least one attempt, whatever its size)
GROUP_MAX_BYTES = 16 * 1024 * 1024


class Backlog:
    """Groups of attempts waiting to be sent, first in first out.

    ``ended`` receives the event of an attempt whose inputs cannot be read (it ends as an
    error at once, and the rest of its group goes on).
    """

    def __init__(self, ended: Callable[[Event], None]) -> None:
        self._ended = ended
        self._read_item: ItemReader | None = None
        #: (runs, limit, the first run's item when already read)
        self._groups: deque[tuple[Sequence[Attempt], int, dict[str, Any] | None]] = deque()

    def __bool__(self) -> bool:
        return bool(self._groups)

    @property
    def attempts(self) -> int:
        """How many attempts wait."""
        return sum(len(runs) for runs, _, _ in self._groups)

    def add(self, group: Sequence[Attempt], limit: int, read_item: ItemReader) -> None:
        """Queue a scheduler group whose attempts share the admission ``limit``."""
        self._read_item = read_item
        for start in range(0, len(group), GROUP_MAX_ITEMS):
            self._groups.append((group[start : start + GROUP_MAX_ITEMS], limit, None))

    def clear(self) -> None:
        self._groups.clear()

    def take(self) -> tuple[list[Attempt], list[dict[str, Any]], int]:
        """The next Dask task's attempts, their call items and its limit.

        Reads items up to :data:`GROUP_MAX_BYTES` of inputs (at least one); the attempts
        left over go back to the front with the item that did not fit. The attempts may
        be none: none of them could be read, each ended with an error outcome.
        """
        runs, limit, first = self._groups.popleft()
        items: list[dict[str, Any]] = []
        sent: list[Attempt] = []
        size = 0
        for i, run in enumerate(runs):
            if i == 0 and first is not None:
                item = first
            else:
                assert self._read_item is not None  # set by add, before any take
                try:
                    item = self._read_item(run)
                except TaskInputError as err:
                    self._ended(input_error_event(run, err))
                    continue
            item_size = _item_bytes(item)
            if items and size + item_size > GROUP_MAX_BYTES:
                self._groups.appendleft((runs[i:], limit, item))
                break
            items.append(item)
            sent.append(run)
            size += item_size
        return sent, items, limit


def _item_bytes(item: dict[str, Any]) -> int:
    """The rough size of a call item's inputs (what it sends to the worker)."""
    size = len(item.get("payload") or b"") + len(item.get("params") or "")
    return size + sum(len(r) for r in item.get("results") or ())


__all__ = ["GROUP_MAX_BYTES", "GROUP_MAX_ITEMS", "Backlog"]
