"""What the public API tells about a job: :class:`JobStatus` (``Job.status()``,
``Job.wait()``) and :class:`Failure` with its :class:`Attempt` records (``Job.failures()``).

Each is a frozen dataclass built from the store's records (:meth:`from_record`) or a
server's JSON answer (:meth:`from_json`), and written back as the same JSON
(:meth:`to_json`: what ``oomguard status --json`` and the HTTP routes print, key for key).
Each is also a read-only mapping of that JSON form, so code written against the dicts these
methods used to return (``job.wait()["counts"]``, as in the README) keeps working; typed
code reads the attributes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from oomguard.jobs.jsonvalue import JSON, JSONObject
from oomguard.store.records import AttemptRecord, FailedTask, JobProgress


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected a number, got {value!r:.80}")
    return int(value)


def _opt_int(value: object) -> int | None:
    return None if value is None else _int(value)


def _opt_float(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float | str):
        raise TypeError(f"expected a number, got {value!r:.80}")
    return float(value)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _counts(value: object) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected counts by name, got {value!r:.80}")
    return {str(k): _int(v) for k, v in value.items()}


class _JsonView(Mapping[str, Any]):
    """The JSON form read as a mapping (the dicts of earlier versions).

    What a key holds depends on the key, as it did in the dicts, so a value is ``Any``:
    code written against the dicts (``job.wait()["counts"]["succeeded"]``) type-checks
    unchanged. New code reads the typed attributes."""

    def to_json(self) -> JSONObject:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


@dataclass(frozen=True, eq=True)
class JobStatus(_JsonView):
    """A job's state, its tasks' counts by state, failed attempts by class, and where its
    results go (as the last scheduler on its store saw its memory budget)."""

    job_id: str
    name: str
    namespace: str
    fn: str
    aggregate: str | None
    #: ``waiting``, ``running``, ``succeeded``, ``failed``, ``cancelled``, ``stopped``, ...
    state: str
    groups: int
    tasks: int
    finished: int
    counts: dict[str, int]
    failures_by_class: dict[str, int]
    #: why the job was stopped: its first attempts all failed loading its task
    stopped: str | None = None
    out: str | None = None
    memory_budget_bytes: int | None = None
    isolation: str | None = None

    @classmethod
    def from_record(cls, record: JobProgress) -> JobStatus:
        """From the store's record of the job."""
        return cls(
            job_id=record.job_id,
            name=record.name,
            namespace=record.namespace,
            fn=record.fn,
            aggregate=record.aggregate,
            state=record.state,
            groups=record.groups,
            tasks=record.tasks,
            finished=record.finished,
            counts=dict(record.counts),
            failures_by_class=dict(record.failures_by_class),
            stopped=record.stopped,
            out=record.out,
            memory_budget_bytes=record.memory_budget_bytes,
            isolation=record.isolation,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> JobStatus:
        """From the store's (or a server's) JSON form."""
        return cls(
            job_id=str(data["job_id"]),
            name=str(data["name"]),
            namespace=str(data["namespace"]),
            fn=str(data["fn"]),
            aggregate=_opt_str(data.get("aggregate")),
            state=str(data["state"]),
            groups=_int(data.get("groups") or 0),
            tasks=_int(data.get("tasks") or 0),
            finished=_int(data.get("finished") or 0),
            counts=_counts(data["counts"]),
            failures_by_class=_counts(data.get("failures_by_class") or {}),
            stopped=_opt_str(data.get("stopped")),
            out=_opt_str(data.get("out")),
            memory_budget_bytes=_opt_int(data.get("memory_budget_bytes")),
            isolation=_opt_str(data.get("isolation")),
        )

    def to_json(self) -> JSONObject:
        """The JSON form, key for key as ``status --json`` and ``GET /v1/jobs/ID`` give it."""
        counts: JSONObject = dict(self.counts)
        by_class: JSONObject = dict(self.failures_by_class)
        return {
            "job_id": self.job_id,
            "name": self.name,
            "namespace": self.namespace,
            "fn": self.fn,
            "aggregate": self.aggregate,
            "state": self.state,
            "groups": self.groups,
            "tasks": self.tasks,
            "finished": self.finished,
            "counts": counts,
            "failures_by_class": by_class,
            "stopped": self.stopped,
            "out": self.out,
            "memory_budget_bytes": self.memory_budget_bytes,
            "isolation": self.isolation,
        }


@dataclass(frozen=True, eq=True)
class Attempt(_JsonView):
    """One attempt of a task: where and how it ran, how it ended, and its evidence."""

    attempt_id: int
    n: int | None
    worker: str | None
    pid: int | None
    state: str
    started_at: float | None
    ended_at: float | None
    failure_class: str | None
    admitted_bytes: int | None
    limit_bytes: int | None
    peak_bytes: int | None
    #: the kernel's lines, the limit, the traceback, ... (JSON, as recorded)
    evidence: JSON = None

    @classmethod
    def from_record(cls, record: AttemptRecord) -> Attempt:
        """From the store's record of the attempt."""
        return cls(
            attempt_id=record.attempt_id,
            n=record.n,
            worker=record.worker,
            pid=record.pid,
            state=record.state,
            started_at=record.started_at,
            ended_at=record.ended_at,
            failure_class=record.failure_class,
            admitted_bytes=record.admitted_bytes,
            limit_bytes=record.limit_bytes,
            peak_bytes=record.peak_bytes,
            evidence=record.evidence,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Attempt:
        return cls(
            attempt_id=_int(data["attempt_id"]),
            n=_opt_int(data.get("n")),
            worker=_opt_str(data.get("worker")),
            pid=_opt_int(data.get("pid")),
            state=str(data["state"]),
            started_at=_opt_float(data.get("started_at")),
            ended_at=_opt_float(data.get("ended_at")),
            failure_class=_opt_str(data.get("failure_class")),
            admitted_bytes=_opt_int(data.get("admitted_bytes")),
            limit_bytes=_opt_int(data.get("limit_bytes")),
            peak_bytes=_opt_int(data.get("peak_bytes")),
            evidence=_json(data.get("evidence")),
        )

    def to_json(self) -> JSONObject:
        return {
            "attempt_id": self.attempt_id,
            "n": self.n,
            "worker": self.worker,
            "pid": self.pid,
            "state": self.state,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "failure_class": self.failure_class,
            "admitted_bytes": self.admitted_bytes,
            "limit_bytes": self.limit_bytes,
            "peak_bytes": self.peak_bytes,
            "evidence": self.evidence,
        }


@dataclass(frozen=True, eq=True)
class Failure(_JsonView):
    """A task that failed for good, with every attempt and its evidence."""

    task_id: int
    group: int
    #: ``task`` or ``aggregate``
    kind: str
    replicate: int | None
    fn: str
    #: its keyword arguments (the user's JSON)
    params: JSON
    failure_class: str | None
    error: str | None
    attempts: tuple[Attempt, ...]
    attempt_count: int
    #: what its memory estimate is learned under (``fn|NAME=VALUE``)
    memory_key: str | None

    @classmethod
    def from_record(cls, record: FailedTask) -> Failure:
        """From the store's record of the failed task."""
        return cls(
            task_id=record.task_id,
            group=record.group,
            kind=record.kind,
            replicate=record.replicate,
            fn=record.fn,
            params=record.params,
            failure_class=record.failure_class,
            error=record.error,
            attempts=tuple(Attempt.from_record(a) for a in record.attempts),
            attempt_count=record.attempt_count,
            memory_key=record.memory_key,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Failure:
        attempts = data.get("attempts") or []
        if not isinstance(attempts, list | tuple):
            raise TypeError(f"expected a list of attempts, got {attempts!r:.80}")
        return cls(
            task_id=_int(data["task_id"]),
            group=_int(data.get("group") or 0),
            kind=str(data.get("kind") or "task"),
            replicate=_opt_int(data.get("replicate")),
            fn=str(data["fn"]),
            params=_json(data.get("params")),
            failure_class=_opt_str(data.get("failure_class")),
            error=_opt_str(data.get("error")),
            attempts=tuple(
                a if isinstance(a, Attempt) else Attempt.from_json(_mapping(a)) for a in attempts
            ),
            attempt_count=_int(data.get("attempt_count") or 0),
            memory_key=_opt_str(data.get("memory_key")),
        )

    def to_json(self) -> JSONObject:
        """The JSON form, key for key as ``status --json`` and ``GET .../failures`` give it."""
        return {
            "task_id": self.task_id,
            "group": self.group,
            "kind": self.kind,
            "replicate": self.replicate,
            "fn": self.fn,
            "params": self.params,
            "failure_class": self.failure_class,
            "error": self.error,
            "attempts": [a.to_json() for a in self.attempts],
            "attempt_count": self.attempt_count,
            "memory_key": self.memory_key,
        }


def _mapping(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected an object, got {value!r:.80}")
    return value


def _json(value: object) -> JSON:
    """``value`` as JSON (what the store decoded from JSON text is JSON already)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    return str(value)


__all__ = ["Attempt", "Failure", "JobStatus"]
