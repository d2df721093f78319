"""Dispatch: from the window to the executor. Admission by memory, grouping of short tasks
of one key for one worker, and the submission of each group with the scheduler's
:func:`~oomguard.scheduler.items.call_item` reader."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from oomguard.executors.base import Attempt, Executor, Held
from oomguard.scheduler.admission import Admission, Estimates, KeyState, Role
from oomguard.scheduler.batching import batch_cap, followers
from oomguard.scheduler.items import call_item
from oomguard.scheduler.running import Running

if TYPE_CHECKING:
    from collections.abc import Callable

    from oomguard.scheduler.recorder import AttemptRecorder
    from oomguard.scheduler.window import Window
    from oomguard.store.protocol import Store
    from oomguard.store.records import TaskRow
    from oomguard.worker.calls import CallItem

#: tasks that do not fit, after which the ones behind them wait for the next pass
MOST_SKIPPED = 256


def memory_key(task: TaskRow) -> str | None:
    """The key a task's memory is known by: its own, else its function."""
    return task.memory_key or task.fn


class Dispatcher:
    """Starts the attempts that admission has room for, in groups, on the executor."""

    def __init__(
        self,
        *,
        store: Store,
        window: Window,
        admission: Admission,
        estimates: Estimates,
        recorder: AttemptRecorder,
        executor: Executor,
        workers: int,
    ) -> None:
        self.store = store
        self.window = window
        self.admission = admission
        self.estimates = estimates
        self.recorder = recorder
        self.executor = executor
        self.workers = workers

    def dispatch(self, now: float, flush: Callable[[], None]) -> None:
        """Admit what fits from the window and submit it; ``flush`` commits the claims
        before any of them runs."""
        window = self.window.tasks
        if not window:
            return
        slots = self.executor.free_slots()
        if slots <= 0:
            return
        recorder = self.recorder
        # Never more than half a fair share of the window, so every worker gets some.
        share = max(1, len(window) // (2 * max(1, self.workers)))
        skipped: list[TaskRow] = []
        assignments: list[list[Running]] = []
        refused: set[str] = set()  # lock keys another replica holds (asked once a pass)
        while window and slots > 0:
            task = window.popleft()
            if task.lock_key and task.lock_key in recorder.locks:
                skipped.append(task)
                continue
            locked = bool(task.lock_key) and recorder.shared_locks
            if locked and not self._take_lock(task, refused):
                skipped.append(task)
                continue
            key = memory_key(task)
            state = self.estimates.state(key)
            if state is KeyState.UNFIT:
                # Proved unfit by a kill at the cap: it fails without running.
                if locked:
                    self._drop_lock(task)
                recorder.refuse_unfit(task, key, time.time())
                continue
            run = self._admit(task, key, state, now, slots)
            if run is None:
                if locked:
                    self._drop_lock(task)
                skipped.append(task)
                # A task that does not fit blocks the ones behind it only when it starves.
                if len(skipped) > MOST_SKIPPED:
                    break
                continue
            group = [run]
            # Batch short tasks of the same key for one worker (each still runs alone).
            most = min(share, batch_cap(recorder.durations.get(run.key)))
            if (
                most > 1
                and task.timeout is None
                and not task.lock_key
                and run.role is Role.NORMAL
                and run.key not in recorder.oom_keys
            ):
                for nxt in followers(window, task, run.key, most, memory_key):
                    group.append(recorder.begin(nxt, run.key, Role.NORMAL, run.limit, now, False))
            assignments.append(group)
            slots -= 1
        window.extendleft(reversed(skipped))
        if assignments:
            # Claims are durable before any of them runs: an attempt that kills its
            # scheduler (or the host) at once is still found, and counted, as lost.
            flush()
        for group in assignments:
            self.executor.submit(group, self.read_item)

    def _take_lock(self, task: TaskRow, refused: set[str]) -> bool:
        """A replica takes ``task``'s lock in the store (other replicas may hold it), in
        the name of the attempt it is about to begin."""
        key = task.lock_key
        assert key is not None
        if key in refused:
            return False
        recorder = self.recorder
        if self.store.leases.take_lock(
            key, recorder.draw_attempt_id(), task.id, recorder.scheduler_id
        ):
            return True
        refused.add(key)
        return False

    def _drop_lock(self, task: TaskRow) -> None:
        assert task.lock_key is not None
        recorder = self.recorder
        self.store.leases.drop_lock(
            task.lock_key, recorder.draw_attempt_id(), recorder.scheduler_id
        )

    def read_item(self, run: Attempt, held: Held | None = None) -> CallItem:
        """The call item of ``run`` (the executor's :class:`ItemReader`)."""
        assert isinstance(run, Running)  # what dispatch submitted, handed back
        return call_item(run, self.store, held)

    def _admit(
        self, task: TaskRow, key: str | None, state: KeyState, now: float, idle: int
    ) -> Running | None:
        """Start an attempt of ``task`` if admission has room for it (see
        :mod:`oomguard.scheduler.admission`), else None: it waits in the window."""
        estimate = self.estimates.estimate(key, task.memory)
        placement = self.admission.place(task.id, key, state, estimate, idle)
        if placement is None:
            return None
        return self.recorder.begin(task, key, placement.role, placement.limit, now, admit=True)
