"""Call items: what a worker needs to run one attempt, read from the store by the scheduler
and handed to the executor (which never reads the store) as its
:class:`~oomguard.executors.base.ItemReader`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oomguard.errors import BlobMissingError, JobNotFoundError, TaskInputError
from oomguard.executors.base import Held

if TYPE_CHECKING:
    from oomguard.scheduler.running import Running
    from oomguard.store.protocol import Store


def call_item(run: Running, store: Store, held: Held | None = None) -> dict[str, Any]:
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


def _aggregated(store: Store, job_id: str) -> bool:
    """Whether ``job_id``'s results are aggregated (False for a job gone meanwhile)."""
    try:
        return bool(store.job(job_id).agg)
    except JobNotFoundError:
        return False
