"""Writes the scheduler queues for the store, committed together by
:meth:`~oomguard.store.sqlite.SqliteStore.apply`.

The scheduler records how attempts start and end by calling the typed methods of
:class:`PendingWrites`; each call queues one named query of ``sql/queries.sql`` (or the
``result`` write) with its parameters and the task it belongs to. The loop commits the
queue in grouped transactions. Because every write names its task, a group whose commit
fails can be applied again task by task, failing only the task whose writes break.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from oomguard.store.queries import SqlParams, SqlValue
from oomguard.units import safe_text


@dataclass
class AttemptRow:
    """An attempt as inserted; updated in place while its insert is not yet committed
    (an attempt that ends before the next commit is inserted with its ending)."""

    id: int
    task_id: int
    n: int
    scheduler_id: str
    started_at: float
    admitted_bytes: int
    limit_bytes: int
    state: str = "running"
    worker: str | None = None
    pid: int | None = None
    ended_at: float | None = None
    failure_class: str | None = None
    peak_bytes: int | None = None
    evidence: str | None = None

    def started_only(self) -> bool:
        """Nothing of its ending is known yet (it may be inserted as ``insert_claim``)."""
        return (
            self.state == "running"
            and self.ended_at is None
            and self.worker is None
            and self.pid is None
            and self.failure_class is None
            and self.peak_bytes is None
            and self.evidence is None
        )


@dataclass(slots=True)
class Write:
    """One queued write: a named query (or ``result``) and its parameters. Not frozen
    (never changed once queued): a frozen ``__init__`` costs 2 us against 0.4 us, and the
    loop queues four of these for each task."""

    query: str
    task_id: int | None
    params: SqlParams | AttemptRow
    #: its query's place in a commit (:data:`PHASES`)
    phase: int
    #: what is bound at the commit: ``params``, or an attempt row's own fields (its
    #: ``__dict__``, so an attempt that ends before its claim is committed is inserted
    #: ended)
    bound: Mapping[str, SqlValue]
    attempt_id: int | None = None

    def parameters(self) -> SqlParams:
        """The parameters, a copy for an attempt row (its fields as they are now)."""
        if isinstance(self.params, AttemptRow):
            return dict(vars(self.params))  # flat: cheaper than dataclasses.asdict
        return self.params


#: the order in which a commit group's writes run, by query. For any one task, its writes
#: in one group only ever come in this order (an attempt that ends before its claim is
#: committed is inserted ended; a retried task is taken again only once its retry is
#: committed; a requeued one may be claimed again at once), so running each query's writes
#: together keeps every task's history. Lock writes share a phase and keep their order.
PHASES = {
    "end_attempt": 0,
    "task_requeued": 1,
    "insert_attempt": 2,
    "task_running": 3,
    "acquire_lock": 4,
    "release_lock": 4,
    "task_retry": 5,
    "task_failed": 6,
    "fail_dependent": 7,
    "result": 8,
    "insert_event": 9,
    "insert_outbox": 10,
}


def safe_params(params: SqlParams) -> SqlParams:
    """``params`` with every string made encodable (:func:`~oomguard.units.safe_text`)."""
    return {k: safe_text(v) if isinstance(v, str) else v for k, v in params.items()}


class PendingWrites:
    """The queue of writes not yet committed, with one method per kind of write."""

    def __init__(self) -> None:
        self._writes: list[Write] = []
        #: when the oldest queued write was queued (time.time()), for commit latency
        self.first_at = 0.0

    def __len__(self) -> int:
        return len(self._writes)

    def __bool__(self) -> bool:
        return bool(self._writes)

    def __iter__(self) -> Iterator[Write]:
        return iter(self._writes)

    def take(self) -> list[Write]:
        """Hand the queued writes over (to be committed) and empty the queue."""
        writes, self._writes = self._writes, []
        return writes

    def _add(
        self,
        query: str,
        task_id: int | None,
        params: SqlParams | AttemptRow,
        attempt_id: int | None = None,
    ) -> None:
        if not self._writes:
            self.first_at = time.time()
        bound = vars(params) if isinstance(params, AttemptRow) else params
        self._writes.append(Write(query, task_id, params, PHASES[query], bound, attempt_id))

    # -- attempts -----------------------------------------------------------------------

    def insert_attempt(self, row: AttemptRow) -> None:
        self._add("insert_attempt", row.task_id, row, row.id)

    def end_attempt(
        self,
        attempt_id: int,
        task_id: int,
        *,
        state: str,
        failure_class: str | None,
        evidence: str | None,
        peak_bytes: int | None,
        pid: int | None,
        worker: str | None,
        ended_at: float,
    ) -> None:
        params: SqlParams = {
            "id": attempt_id,
            "state": state,
            "ended_at": ended_at,
            "failure_class": failure_class,
            "peak_bytes": peak_bytes,
            "evidence": evidence,
            "pid": pid,
            "worker": worker,
        }
        self._add("end_attempt", task_id, params, attempt_id)

    def discard_attempt(self, attempt_id: int) -> None:
        """Drop the queued writes of an attempt that never started (requeued before its
        insert was committed): it is as if it had never been claimed."""
        self._writes = [w for w in self._writes if w.attempt_id != attempt_id]

    # -- tasks --------------------------------------------------------------------------

    def task_running(self, task_id: int, n: int, now: float, attempt_id: int) -> None:
        self._add("task_running", task_id, {"task_id": task_id, "n": n, "now": now}, attempt_id)

    def task_requeued(self, task_id: int, n: int, now: float) -> None:
        self._add("task_requeued", task_id, {"task_id": task_id, "n": n, "now": now})

    def task_retry(
        self,
        task_id: int,
        *,
        n: int,
        oom_attempts: int,
        memory: int | None,
        not_before: float,
        failure_class: str,
        error: str | None,
        now: float,
    ) -> None:
        params: SqlParams = {
            "task_id": task_id,
            "n": n,
            "oom_attempts": oom_attempts,
            "memory": memory,
            "not_before": not_before,
            "failure_class": failure_class,
            "error": error,
            "now": now,
        }
        self._add("task_retry", task_id, params)

    def task_failed(
        self,
        task_id: int,
        *,
        n: int,
        oom_attempts: int,
        failure_class: str,
        error: str | None,
        now: float,
    ) -> None:
        params: SqlParams = {
            "task_id": task_id,
            "n": n,
            "oom_attempts": oom_attempts,
            "failure_class": failure_class,
            "error": error,
            "now": now,
        }
        self._add("task_failed", task_id, params)

    def fail_dependent(self, task_id: int, job_id: str, grp: int, error: str, now: float) -> None:
        """Fail the aggregation waiting on ``task_id`` (a replicate that failed for good)."""
        params: SqlParams = {"job_id": job_id, "grp": grp, "now": now, "error": error}
        self._add("fail_dependent", task_id, params)

    def result(
        self,
        task_id: int,
        *,
        job_id: str,
        attempt_id: int,
        value: bytes | None,
        kind: str,
        grp: int,
        n: int,
        now: float,
    ) -> None:
        """Store a result (exactly once per task), succeed its task, release dependants."""
        params: SqlParams = {
            "task_id": task_id,
            "job_id": job_id,
            "attempt_id": attempt_id,
            "value": value,
            "kind": kind,
            "grp": grp,
            "now": now,
            "n": n,
        }
        self._add("result", task_id, params)

    # -- locks and events ---------------------------------------------------------------

    def acquire_lock(self, key: str, attempt_id: int, task_id: int) -> None:
        params: SqlParams = {"key": key, "attempt_id": attempt_id, "task_id": task_id}
        self._add("acquire_lock", task_id, params, attempt_id)

    def release_lock(self, attempt_id: int, task_id: int) -> None:
        self._add("release_lock", task_id, {"attempt_id": attempt_id})

    def event(self, job_id: str | None, task_id: int | None, kind: str, data: str) -> None:
        params: SqlParams = {
            "ts": time.time(),
            "job_id": job_id,
            "task_id": task_id,
            "kind": kind,
            "data": data,
        }
        self._add("insert_event", task_id, params)

    def outbox(self, task_id: int | None, ts: float, kind: str, notice: str) -> None:
        """A notice for the webhooks (:mod:`~oomguard.store.outbox`), committed with what
        caused it."""
        self._add("insert_outbox", task_id, {"ts": ts, "kind": kind, "notice": notice})


__all__ = ["PHASES", "AttemptRow", "PendingWrites", "Write", "safe_params"]
