"""The executor protocol the scheduler drives.

``poll`` returns :mod:`~oomguard.executors.events`: an attempt ended (with its outcome), a
local worker died running it (the scheduler classifies the death), or it was requeued
(it never started).

Executors never see the scheduler nor the store: :meth:`Executor.submit` gets the attempts
and an :data:`ItemReader` (the scheduler's: :func:`oomguard.scheduler.items.call_item`)
that builds each attempt's call item (:mod:`oomguard.worker.calls`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from oomguard.errors import TaskInputError
from oomguard.executors.events import AttemptEnded, Event, failed
from oomguard.jobs.model import FailureClass, KillReason
from oomguard.worker.calls import CallItem


class WorkerRef(Protocol):
    """Where an attempt runs: a local worker, or a Dask worker's address."""

    @property
    def name(self) -> str | None: ...

    @property
    def pid(self) -> int | None: ...


class Attempt(Protocol):
    """What an executor needs of an attempt (the scheduler's ``Running``)."""

    attempt_id: int
    #: the memory limit admission gave it (0 for the later attempts of a group)
    limit: int
    #: set by the executor once it knows where the attempt runs
    worker: WorkerRef | None
    #: its peak must not count memory an earlier attempt left (an attempt at the cap,
    #: whose kill proves its key unfit: worker/hygiene.py)
    clean: bool


#: where the executor already holds some attempts' results (``(attempt ids) -> (where,
#: the ids it holds there)``): an aggregation's item refers to those instead of carrying
#: their bytes (:mod:`~oomguard.executors.dask.held`)
Held = Callable[[Sequence[int | None]], tuple[str | None, set[int]]]


class ItemReader(Protocol):
    """Builds the call item of one attempt (the scheduler's
    :func:`~oomguard.scheduler.items.call_item`, over the store); raises
    :class:`~oomguard.errors.TaskInputError` when the attempt's inputs cannot be read."""

    def __call__(self, run: Attempt, held: Held | None = None) -> CallItem: ...


class Executor(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def free_slots(self) -> int: ...

    def submit(self, group: Sequence[Attempt], read_item: ItemReader) -> None:
        """Run ``group``'s attempts (one worker, in order). Items are built with
        ``read_item``; an attempt whose inputs cannot be read ends with an ``error``
        outcome at a later :meth:`poll`, and the others of the group still run."""

    def poll(self, timeout: float) -> list[Event]: ...

    def wake(self) -> None:
        """End a :meth:`poll` that is waiting now, or the next one, at once (thread-safe:
        another thread added work)."""

    def kill(self, run: Attempt, reason: KillReason, evidence: dict[str, object]) -> None:
        """End ``run``'s attempt now (``timeout``, ``cancel``); its ending comes as an
        event at a later :meth:`poll`."""

    def release(self, worker: WorkerRef) -> None:
        """A dead worker's evidence was read: its cgroup may go."""

    @property
    def recycles(self) -> dict[str, int]:
        """Workers recycled, by reason."""

    @property
    def leftovers(self) -> dict[str, int]:
        """What was cleaned up after this machine's workers, by kind
        (``processes_killed``, ``cgroups_not_removed``: worker/pool.py)."""

    def worker_pids(self) -> dict[str, int]:
        """The pids of the workers on this machine, by name (empty for a cluster)."""

    def worker_isolation(self) -> dict[str, str]:
        """How each worker isolates attempts (``cgroup-v1``, ``cgroup-v2``, ``watchdog``,
        or on Dask ``thread``), by name (a Dask worker's address)."""

    def memory_budget(self) -> int | None:
        """The memory of a remote cluster's workers, when it knows better than this
        machine (None: derive the budget here)."""

    def max_task_memory(self) -> int | None:
        """The most one attempt can get on a remote cluster (None: no other limit)."""


def input_error_event(run: Attempt, err: TaskInputError) -> AttemptEnded:
    """The ``error`` outcome of an attempt whose inputs cannot be read (it never ran)."""
    return failed(run.attempt_id, FailureClass.ERROR, f"error: {err}", {"input_error": str(err)})
