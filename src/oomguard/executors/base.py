"""The executor protocol the scheduler drives.

``poll`` returns events, tuples whose first item names them:

* ``("outcome", attempt_id, ok, pickled_value, failure_class, message, evidence, peak, worker)``
* ``("died", attempt_id, death, counters_after)``: the worker running the attempt died;
  ``death`` has ``.worker`` (with ``pid``, ``start_time``, ``cgroup``, ``killed_by``,
  ``counters_before``, ``peak_sample``), ``.status`` (as from ``wait4``) and ``.rusage``.
* ``("requeue", attempt_id)``: sent to a worker that died before it started it.
"""

from __future__ import annotations

from typing import Any, Protocol


class Executor(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def free_slots(self) -> int: ...

    def submit(self, group: list[Any], scheduler: Any) -> None: ...

    def poll(self, timeout: float) -> list[tuple[Any, ...]]: ...

    def kill(self, run: Any, reason: str, evidence: dict[str, Any]) -> None: ...

    def release(self, worker: Any) -> None: ...


def call_item(run: Any, store: Any) -> dict[str, Any]:
    """What a worker needs to run one attempt of ``run.task``."""
    task = run.task
    item: dict[str, Any] = {"attempt_id": run.attempt_id, "fn": task.fn}
    if task.kind == "aggregate":
        params, results = store.group_inputs(task.job_id, task.grp)
        item.update(form="agg", params=params, results=results)
    elif task.payload is not None or task.payload_ref is not None:
        payload = task.payload if task.payload is not None else store.get_blob(task.payload_ref)
        item.update(form="pickle", payload=payload)
    else:
        item.update(form="json", params=task.params, replicate=task.replicate)
    return item
