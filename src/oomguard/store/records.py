"""The records a store hands across layers: typed rows, never dicts read by key."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields


@dataclass
class TaskRow:
    """A task as the scheduler needs it to dispatch an attempt (the scheduler's working
    copy: it counts attempts and sets the memory asked for on it, so it is not frozen)."""

    id: int
    job_id: str
    grp: int
    kind: str
    replicate: int | None
    fn: str
    params: str | None
    params_ref: str | None
    payload: bytes | None
    payload_ref: str | None
    attempts: int
    oom_attempts: int
    retries: int
    oom_retries: int
    timeout: float | None
    memory: int | None
    memory_key: str | None
    lock_key: str | None
    #: why the task's inputs cannot be read (a missing blob): it fails without running
    input_error: str | None = None


@dataclass(frozen=True)
class StoredSpec:
    """How a job was submitted, as the store keeps it (JSON in the job's row). A job from
    the Python API sets ``replicates``, ``out`` and ``batch_size``; one submitted over HTTP
    sets ``source="http"``, ``fanout`` and ``command``; unset fields are None."""

    #: tasks per parameter group (the Python API's ``replicates=``)
    replicates: int | None = None
    #: the Parquet output directory
    out: str | None = None
    #: open parameter groups allowed at once (None: the scheduler's setting)
    batch_size: int | None = None
    #: where the job came from: "http" for the HTTP API
    source: str | None = None
    #: tasks per parameter group of an HTTP submission
    fanout: int | None = None
    #: the declared command an HTTP submission runs
    command: str | None = None

    def to_json(self) -> str:
        """The JSON stored for this spec: its fields that are set."""
        return json.dumps(
            {
                f.name: getattr(self, f.name)
                for f in fields(self)
                if getattr(self, f.name) is not None
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> StoredSpec:
        """A stored spec; keys this oomguard does not know (a newer one wrote them) are
        left out."""
        data = json.loads(text) if text else {}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class JobTimes:
    """When a job's first attempt started and its last one ended (None: not yet), and how
    many of its attempts run now."""

    started_at: float | None
    ended_at: float | None
    running_attempts: int


@dataclass(frozen=True)
class JobRecord:
    """A job as the store holds it."""

    id: str
    name: str
    namespace: str
    #: the task function (``module:function``) or the command's name
    fn: str
    #: the aggregation function, if the job has one
    agg: str | None
    spec: StoredSpec
    #: open, sealed, cancelled or stopped
    state: str
    created_at: float
    #: parameter groups stored so far
    groups: int


__all__ = ["JobRecord", "JobTimes", "StoredSpec", "TaskRow"]
