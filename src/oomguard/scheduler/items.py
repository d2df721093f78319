"""Call items: what a worker needs to run one attempt, read from the store by the scheduler
and handed to the executor (which never reads the store) as its
:class:`~oomguard.executors.base.ItemReader`."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from oomguard.errors import BlobMissingError, JobNotFoundError, TaskInputError
from oomguard.executors.base import Held
from oomguard.worker.calls import AggregateCall, CallItem, HeldRef, JsonCall, PickledCall

if TYPE_CHECKING:
    from oomguard.scheduler.running import Running
    from oomguard.store.protocol import Store


def call_item(run: Running, store: Store, held: Held | None = None) -> CallItem:
    """What a worker needs to run one attempt of ``run.task`` (:mod:`oomguard.worker.calls`).

    With ``held`` (an executor that can hold results where they were made: Dask), a task
    whose job has an aggregation is asked to be held (``hold``), and an aggregation's
    replicates held by the executor are sent as :class:`~oomguard.worker.calls.HeldRef`,
    the place in ``at`` (docs/ARCHITECTURE.md, "Dask").

    :class:`~oomguard.errors.TaskInputError` when the inputs cannot be read (a blob file
    deleted by hand, or by ``gc`` forced past its floor)."""
    task = run.task
    if task.input_error is not None:
        raise TaskInputError(task.input_error, task_id=task.id)
    item: CallItem
    try:
        if task.kind == "aggregate" and held is not None:
            rows = store.queries.group_results(task.job_id, task.grp)
            at, ids = held([attempt_id for attempt_id, _, _ in rows])
            results = tuple(
                HeldRef(a) if a is not None and a in ids else _stored(store, value, ref)
                for a, value, ref in rows
            )
            # An aggregation's params are its group's (params_ref read by take_ready).
            item = AggregateCall(
                run.attempt_id, task.fn, task.params, results, at=at if ids else None
            )
        elif task.kind == "aggregate":
            params, values = store.group_inputs(task.job_id, task.grp)
            item = AggregateCall(run.attempt_id, task.fn, params, tuple(values))
        elif task.payload is not None or task.payload_ref is not None:
            if task.payload is not None:
                payload = task.payload
            else:
                assert task.payload_ref is not None
                payload = store.blobs.get(task.payload_ref)
            item = PickledCall(run.attempt_id, task.fn, payload)
        else:
            item = JsonCall(run.attempt_id, task.fn, task.params, task.replicate)
        if held is not None and task.kind == "task" and _aggregated(store, task.job_id):
            item = replace(item, hold=True)
    except BlobMissingError as err:
        raise TaskInputError(f"input {err}", task_id=task.id) from err
    return item


def _stored(store: Store, value: bytes | None, ref: str | None) -> bytes:
    """A replicate's stored result: in its row, or in the blob ``ref`` names."""
    if ref:
        return store.blobs.get(ref)
    if value is None:  # a replicate that ended without one: the aggregation's error
        raise BlobMissingError("a replicate has no stored result")
    return value


def _aggregated(store: Store, job_id: str) -> bool:
    """Whether ``job_id``'s results are aggregated (False for a job gone meanwhile)."""
    try:
        return bool(store.job(job_id).agg)
    except JobNotFoundError:
        return False
