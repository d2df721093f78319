"""The window: the tasks taken from the store into memory and not yet dispatched, refilled
in bounded steps from the active jobs (never a whole job in memory), aggregations first."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oomguard.store.protocol import Store
    from oomguard.store.records import TaskRow

#: how long to wait before looking again when nothing more was ready (seconds)
REFILL_AGAIN = 0.02


class Window:
    """Up to :attr:`size` tasks in memory; the loop refills it when half empty."""

    def __init__(
        self,
        store: Store,
        size: int,
        batch_size: int,
        owner: str | None = None,
        claim: bool = True,
    ) -> None:
        self.store = store
        #: the scheduler whose window this is: the tasks it takes are claimed for it
        self.owner = owner
        #: whether taking a task writes its claim (state ``queued``, ``owner``): a replica's
        #: window, which other replicas take from too. A scheduler that owns the store alone
        #: reads its tasks and leaves them ready (``Store.read_ready``): the claim cost a
        #: row write a task, and nothing else takes them while it lives.
        self.claim = claim
        #: the tasks, in the order they are dispatched
        self.tasks: deque[TaskRow] = deque()
        self.size = size
        #: open parameter groups allowed for a job that sets none
        self.default_batch_size = batch_size
        self._refill_after = 0.0
        self._batch_sizes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.tasks)

    def __bool__(self) -> bool:
        return bool(self.tasks)

    def __iter__(self) -> Iterator[TaskRow]:
        return iter(self.tasks)

    def due(self, now: float, added: bool) -> bool:
        """Whether to refill now: half empty, and something may be ready (tasks were
        ``added``, or nothing was ready a little while ago)."""
        return len(self.tasks) < self.size // 2 and (added or now >= self._refill_after)

    def refill(self, now: float, active: Iterable[str]) -> None:
        """Take ready tasks of the ``active`` jobs, in order, up to :attr:`size`. Without
        :attr:`claim`, every task that left the window must have its new state committed
        first (the loop flushes before refilling): one still ready would be read again."""
        want = self.size - len(self.tasks)
        for job_id in active:
            if want <= 0:
                break
            low = self.store.low_group(job_id)
            if low is None:
                continue
            grp_limit = low + self.batch_size(job_id)
            if self.claim:
                rows = self.store.take_ready(job_id, want, grp_limit, owner=self.owner)
            else:
                held = [t.id for t in self.tasks if t.job_id == job_id]
                rows = self.store.read_ready(job_id, want, grp_limit, held)
            # An aggregation goes first: its inputs were just made (held on a Dask worker).
            self.tasks.extendleft(reversed([r for r in rows if r.kind == "aggregate"]))
            self.tasks.extend(r for r in rows if r.kind != "aggregate")
            want -= len(rows)
        # Nothing more was ready: look again a little later, not at every step.
        self._refill_after = now + REFILL_AGAIN if want > 0 else 0.0

    def batch_size(self, job_id: str) -> int:
        """Open parameter groups allowed for a job: its own batch_size, else the config's."""
        size = self._batch_sizes.get(job_id)
        if size is None:
            size = int(self.store.job(job_id).spec.batch_size or self.default_batch_size)
            self._batch_sizes[job_id] = size
        return size

    def forget(self, finished: Iterable[str]) -> None:
        """Jobs that finished: their settings are no longer needed."""
        gone = set(finished)
        if gone:
            self._batch_sizes = {j: n for j, n in self._batch_sizes.items() if j not in gone}

    def put_back(self, task: TaskRow) -> None:
        """``task`` goes back to the front (its attempt never started)."""
        self.tasks.appendleft(task)

    def drop(self, task_ids: set[int]) -> None:
        """Drop the tasks ``task_ids`` (cancelled)."""
        self.tasks = deque(t for t in self.tasks if t.id not in task_ids)
