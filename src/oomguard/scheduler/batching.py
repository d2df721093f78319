"""Which attempts go to a worker in one message (a *batch*). Pure logic.

Only tasks seen to be short are batched: about :data:`BATCH_SECONDS` of work a batch, from
how long a key's attempts ran so far; none before a key's durations are seen; never tasks
with a timeout or a lock, of another kind, key or declared memory; never more than
:data:`BATCH_BYTES` of input. Each attempt of a batch still runs alone in the worker (the
garbage collector between them when the heap grew); a worker killed inside a batch costs
only the attempt that was running. See docs/ARCHITECTURE.md, "Admission".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oomguard.store.records import TaskRow

#: a batch holds about this much work (seconds)
BATCH_SECONDS = 0.05
#: the most attempts in one batch, and how many while a key's durations are unknown (one:
#: a key is batched only once its attempts are seen to be short)
BATCH_MAX = 512
BATCH_UNKNOWN = 1
#: the most input (parameters, payloads) in one batch; a blob input counts as this much
BATCH_BYTES = 4 * 1024 * 1024


def batch_cap(seconds: float | None) -> int:
    """How many attempts of a key whose attempts take ``seconds`` (None: not seen yet) go
    in one batch. Tasks of :data:`BATCH_SECONDS` or more are never batched."""
    if seconds is None:
        return BATCH_UNKNOWN
    return max(1, min(BATCH_MAX, int(BATCH_SECONDS / max(seconds, 1e-6))))


def input_bytes(task: TaskRow) -> int:
    """What a task's inputs weigh in a batch message (a blob's size is not known here:
    a task with one fills a batch)."""
    if task.params_ref is not None or task.payload_ref is not None:
        return BATCH_BYTES
    return len(task.params or "") + len(task.payload or b"")


def followers(
    window: deque[TaskRow],
    first: TaskRow,
    key: str | None,
    most: int,
    memory_key: Callable[[TaskRow], str | None],
) -> list[TaskRow]:
    """Take from the front of ``window`` the tasks that may ride with ``first`` (already
    taken, of memory key ``key``), up to ``most`` in all."""
    taken: list[TaskRow] = []
    size = input_bytes(first)
    while window and len(taken) + 1 < most:
        nxt = window[0]
        size += input_bytes(nxt)
        if (
            size > BATCH_BYTES
            or nxt.timeout is not None
            or nxt.lock_key
            or nxt.kind != first.kind
            or memory_key(nxt) != key
            or nxt.memory != first.memory
        ):
            break
        taken.append(window.popleft())
    return taken
