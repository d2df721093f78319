"""The executor protocol the scheduler drives.

``poll`` returns :mod:`~oomguard.executors.events`: an attempt ended (with its outcome), a
local worker died running it (the scheduler classifies the death), or it was requeued
(it never started).

Executors never see the scheduler: :meth:`Executor.submit` gets the attempts and an
:data:`ItemReader` that builds each attempt's call item from the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from oomguard.errors import BlobMissingError, JobNotFoundError, TaskInputError
from oomguard.executors.events import AttemptEnded, Event, failed

if TYPE_CHECKING:
    from oomguard.store.sqlite import SqliteStore, TaskRow


class WorkerRef(Protocol):
    """Where an attempt runs: a local worker, or a Dask worker's address."""

    @property
    def name(self) -> str | None: ...

    @property
    def pid(self) -> int | None: ...


class Attempt(Protocol):
    """What an executor needs of an attempt (the scheduler's ``Running``)."""

    attempt_id: int
    task: TaskRow
    #: the memory limit admission gave it (0 for the later attempts of a group)
    limit: int
    #: set by the executor once it knows where the attempt runs
    worker: WorkerRef | None
    #: its peak must not count memory an earlier attempt left (an attempt at the cap,
    #: whose kill proves its key unfit: worker/hygiene.py)
    clean: bool


#: where the executor already holds some attempts' results (``(attempt ids) -> (where,
#: the ids it holds there)``): an aggregation's item refers to those instead of carrying
#: their bytes (:mod:`~oomguard.executors.dask_held`)
Held = Callable[[Sequence[int | None]], tuple[str | None, set[int]]]


class ItemReader(Protocol):
    """Builds the call item of one attempt (:func:`call_item` over the store); raises
    :class:`~oomguard.errors.TaskInputError` when the attempt's inputs cannot be read."""

    def __call__(self, run: Attempt, held: Held | None = None) -> dict[str, Any]: ...


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

    def kill(self, run: Attempt, reason: str, evidence: dict[str, Any]) -> None:
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


def call_item(run: Attempt, store: SqliteStore, held: Held | None = None) -> dict[str, Any]:
    """What a worker needs to run one attempt of ``run.task``.

    With ``held`` (an executor that can hold results where they were made: Dask), a task
    whose job has an aggregation is asked to be held (``hold``), and an aggregation's
    replicates held by the executor are sent as ``{"held": attempt_id}``, the place in
    ``at`` (docs/ARCHITECTURE.md, "Dask").

    :class:`~oomguard.errors.TaskInputError` when the inputs cannot be read (a blob file
    deleted by hand, or by ``gc`` forced past its floor)."""
    task = run.task
    if task.input_error is not None:
        raise TaskInputError(task.input_error, task_id=task.id)
    item: dict[str, Any] = {"attempt_id": run.attempt_id, "fn": task.fn}
    try:
        if task.kind == "aggregate" and held is not None:
            rows = store.queries.group_results(task.job_id, task.grp)
            at, ids = held([attempt_id for attempt_id, _, _ in rows])
            results: list[Any] = [
                {"held": a} if a in ids else (store.blobs.get(ref) if ref else value)
                for a, value, ref in rows
            ]
            # An aggregation's params are its group's (params_ref read by take_ready).
            item.update(form="agg", params=task.params, results=results)
            if ids:
                item["at"] = at
        elif task.kind == "aggregate":
            params, values = store.group_inputs(task.job_id, task.grp)
            item.update(form="agg", params=params, results=values)
        elif task.payload is not None or task.payload_ref is not None:
            if task.payload is not None:
                payload = task.payload
            else:
                assert task.payload_ref is not None
                payload = store.blobs.get(task.payload_ref)
            item.update(form="pickle", payload=payload)
        else:
            item.update(form="json", params=task.params, replicate=task.replicate)
        if held is not None and task.kind == "task" and _aggregated(store, task.job_id):
            item["hold"] = True
    except BlobMissingError as err:
        raise TaskInputError(f"input {err}", task_id=task.id) from err
    return item


def _aggregated(store: SqliteStore, job_id: str) -> bool:
    """Whether ``job_id``'s results are aggregated (False for a job gone meanwhile)."""
    try:
        return bool(store.job(job_id)["agg"])
    except JobNotFoundError:
        return False


def input_error_event(run: Attempt, err: TaskInputError) -> AttemptEnded:
    """The ``error`` outcome of an attempt whose inputs cannot be read (it never ran)."""
    return failed(run.attempt_id, "error", f"error: {err}", {"input_error": str(err)})
