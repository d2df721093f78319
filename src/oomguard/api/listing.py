"""Task listings with a size: ``GET /v1/jobs/{id}/tasks``.

A listing carries no arguments unless asked (``?params=full``), and then only those kept in
the task's row (at most :data:`~oomguard.store.blobs.PARAMS_INLINE_MAX` bytes of JSON):
arguments in a blob file are marked ``params_truncated`` and never read (the tasks of a
batch share one blob; reading and parsing it once per row multiplied the server's memory).
Errors are cut to :data:`ERROR_MAX` characters, and rows stop once the answer reaches its
byte budget (``truncated``, with ``next_after`` to ask for the rest).
"""

from __future__ import annotations

from collections.abc import Iterable

import pydantic_core

from oomguard.api.schemas import TaskInfo, TaskList
from oomguard.jobs.jsonvalue import JSONObject
from oomguard.store.records import TaskListing

#: characters of a task's error a listing shows
ERROR_MAX = 2000
#: what a row costs beyond its arguments and error, about (JSON keys and small values)
ROW_BYTES = 300


def task_list(job_id: str, rows: Iterable[TaskListing], budget: int) -> TaskList:
    """The listing of ``rows`` (from ``store.queries.task_list``), at most about
    ``budget`` bytes of JSON (one row at least)."""
    tasks: list[TaskInfo] = []
    used = 0
    for row in rows:
        params, truncated = _params(row.params, row.params_in_blob)
        error = row.error
        if error is not None and len(error) > ERROR_MAX:
            error = error[:ERROR_MAX] + f"... ({len(error) - ERROR_MAX} more characters)"
        cost = ROW_BYTES + len(error or "") + (params[1] if params else 0)
        if tasks and used + cost > budget:
            return TaskList(
                job_id=job_id, tasks=tasks, truncated=True, next_after=tasks[-1].task_id
            )
        used += cost
        tasks.append(
            TaskInfo(
                task_id=row.task_id,
                group=row.group,
                kind=row.kind,
                replicate=row.replicate,
                fn=row.fn,
                state=row.state,
                attempts=row.attempts,
                failure_class=row.failure_class,
                error=error,
                params=params[0] if params else None,
                params_truncated=truncated,
            )
        )
    return TaskList(job_id=job_id, tasks=tasks)


def _params(text: str | None, in_blob: bool) -> tuple[tuple[JSONObject, int] | None, bool]:
    """((arguments, their JSON size), truncated): None where not asked for or not listable."""
    if in_blob:
        return None, True
    if text is None:
        return None, False
    try:
        # Not json.loads: text stored by any client may hold lone surrogates or nest deeper
        # than a JSON answer can carry; those are not listed (truncated) rather than a 500.
        value = pydantic_core.from_json(text)
    except ValueError:
        return None, True
    if not isinstance(value, dict):
        return None, True
    return (value, len(text)), False


__all__ = ["ERROR_MAX", "task_list"]
