"""Salvage of what cannot be recorded: the writes that fail one task whose own writes could
not be stored (a result blob that cannot be written, a value SQLite refuses), so that the
rest of its commit group is stored and the loop goes on. Pure: the recorder applies the
:class:`Salvage` (it stops the attempts still running). See docs/ARCHITECTURE.md, "The
failure path".
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from dataclasses import dataclass

from oomguard.store.writes import AttemptRow, PendingWrites, Write


@dataclass(frozen=True)
class Salvage:
    """What failing a task whose own writes could not be stored takes."""

    #: the writes that fail it (its attempts ended, its locks released, its dependants
    #: failed), to commit in a transaction of their own
    writes: list[Write]
    #: its attempts: those still running are to be stopped (their outcomes then find no
    #: attempt to end and are discarded)
    attempt_ids: list[int]
    #: its job (None: the task is gone), whose Parquet parts may now be due
    job_id: str | None


def unrecordable(
    task_id: int,
    group: list[Write],
    err: Exception,
    place: tuple[str, int, str] | None,
) -> Salvage:
    """What fails ``task_id`` because its own writes (``group``) failed; ``place`` is the
    task's ``(job id, group, kind)`` (None: gone)."""
    what = "result" if any(w.query == "result" for w in group) else "outcome"
    message = f"error: {what} could not be stored: {type(err).__name__}: {err}"
    evidence = json.dumps({"message": message, "internal_error": trace(err)})
    now = time.time()
    fix = PendingWrites()
    attempts: list[int] = []
    n = oom_attempts = 0
    for write in group:
        if isinstance(write.params, AttemptRow):
            row = dataclasses.replace(write.params)
            row.state, row.ended_at, row.failure_class = "failed", now, "error"
            row.evidence = evidence
            fix.insert_attempt(row)
        if write.attempt_id is not None and write.attempt_id not in attempts:
            attempts.append(write.attempt_id)
        params = write.parameters()
        n = max(n, int(params.get("n") or 0))
        oom_attempts = max(oom_attempts, int(params.get("oom_attempts") or 0))
    for attempt_id in attempts:
        fix.end_attempt(
            attempt_id,
            task_id,
            state="failed",
            failure_class="error",
            evidence=evidence,
            peak_bytes=None,
            pid=None,
            worker=None,
            ended_at=now,
        )
        fix.release_lock(attempt_id, task_id)
    fix.task_failed(
        task_id,
        n=n or len(attempts),
        oom_attempts=oom_attempts,
        failure_class="error",
        error=message,
        now=now,
    )
    if place is not None:
        job_id, grp, kind = place
        if kind == "task":
            fix.fail_dependent(
                task_id, job_id, grp, f"replicate task {task_id} failed (error)", now
            )
        data = {"class": "error", "retry": False, "final": "error"}
        fix.event(job_id, task_id, "attempt_failed", json.dumps(data))
    return Salvage(fix.take(), attempts, place[0] if place is not None else None)


def trace(err: BaseException) -> list[str]:
    """The last lines of ``err``'s traceback, for the attempt's evidence."""
    return "".join(traceback.format_exception(err)).splitlines()[-12:]
