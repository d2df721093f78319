"""The records a store hands across layers: typed rows, never dicts read by key."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from oomguard.jobs.jsonvalue import JSON


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
class Quota:
    """The room a submission of ``tasks`` asks for, within a server's limits: checked against
    the whole store (every replica's tasks) in the transaction that inserts its job, which
    then holds the room (``jobs.reserved``) until its tasks are written."""

    tasks: int
    #: the store's pending tasks at most (``--max-pending-tasks``; None: no limit)
    max_pending: int | None = None
    #: the namespace's pending tasks at most (``--namespace-quota``; None: no quota)
    namespace_quota: int | None = None
    #: namespaces without a quota of their own that may have pending tasks at once
    #: (``--max-namespaces``; None: any number); checked only for such a namespace
    max_namespaces: int | None = None
    #: the namespaces that have a quota of their own (not counted against max_namespaces)
    quoted: tuple[str, ...] = ()


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


@dataclass(frozen=True)
class StoredParams:
    """A task's keyword arguments as its row keeps them: their JSON text, or the name of
    the blob file holding it when too large for the row (``store.blobs.params_row``)."""

    params: str | None
    params_ref: str | None


@dataclass(slots=True)
class NewTask:
    """A task to insert (:meth:`~oomguard.store.protocol.Store.add_tasks`): the tasks
    table's columns a submission sets; ``scheduler/rows.py`` builds them.

    Not frozen, though nothing changes one once built: a submission builds one per task,
    and a frozen dataclass's ``__init__`` costs three times as much (3 us against 0.9 us
    for these 17 fields), which a million-task sweep pays on its submitting thread."""

    job_id: str
    grp: int
    #: ``task`` or ``aggregate``
    kind: str
    fn: str
    #: ``ready``, or ``pending`` for an aggregation waiting on ``deps`` replicates
    state: str = "ready"
    replicate: int | None = None
    #: the keyword arguments' JSON text, or the blob holding it (``params_ref``)
    params: str | None = None
    params_ref: str | None = None
    #: a pickled call (a command's closure), or the blob holding it
    payload: bytes | None = None
    payload_ref: str | None = None
    #: replicates an aggregation waits for
    deps: int = 0
    retries: int = 0
    oom_retries: int = 3
    timeout: float | None = None
    memory: int | None = None
    memory_key: str | None = None
    lock_key: str | None = None


@dataclass(frozen=True)
class JobProgress:
    """A job's state, its tasks' counts by state, failed attempts by class and where its
    results go (``store.queries.job_status``; the public API's ``JobStatus`` is built from
    it)."""

    job_id: str
    name: str
    namespace: str
    fn: str
    aggregate: str | None
    state: str
    groups: int
    tasks: int
    finished: int
    counts: dict[str, int]
    failures_by_class: dict[str, int]
    #: why the job was stopped (its first attempts all failed loading its task)
    stopped: str | None
    out: str | None
    #: as the last scheduler on this store saw them
    memory_budget_bytes: int | None
    isolation: str | None


@dataclass(frozen=True)
class AttemptRecord:
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


@dataclass(frozen=True)
class AttemptSpan:
    """An attempt of a job as its timeline shows it (``store.queries.all_attempts``)."""

    attempt_id: int
    task_id: int
    started_at: float | None
    ended_at: float | None
    admitted_bytes: int | None
    limit_bytes: int | None
    peak_bytes: int | None
    failure_class: str | None
    state: str
    memory_key: str | None


@dataclass(frozen=True)
class FailedTask:
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
    attempts: tuple[AttemptRecord, ...]
    attempt_count: int
    #: what its memory estimate is learned under (``fn|NAME=VALUE``)
    memory_key: str | None


@dataclass(frozen=True)
class TaskDetail:
    """One task: its job, function, state, final class and error (``store.queries.task``)."""

    task_id: int
    job_id: str
    group: int
    kind: str
    replicate: int | None
    fn: str
    state: str
    attempt_count: int
    failure_class: str | None
    error: str | None
    memory_key: str | None
    memory: int | None
    #: its keyword arguments' JSON text where the row holds it
    params: str | None
    #: its keyword arguments are in a blob file (not read here)
    params_in_blob: bool


@dataclass(frozen=True)
class JobListing:
    """A job in the list of recent jobs (``store.queries.recent_jobs``)."""

    job_id: str
    name: str
    namespace: str
    fn: str
    state: str
    created_at: float


@dataclass(frozen=True)
class TaskListing:
    """A task in a job's task listing (``store.queries.task_list``)."""

    task_id: int
    group: int
    kind: str
    replicate: int | None
    fn: str
    state: str
    attempts: int
    failure_class: str | None
    error: str | None
    #: its keyword arguments' JSON text, when asked for and the row holds it
    params: str | None
    #: its keyword arguments are in a blob file (never read for a listing)
    params_in_blob: bool


@dataclass(frozen=True)
class EventRecord:
    """Something that happened to a job (``store.queries.events``)."""

    id: int
    ts: float
    task_id: int | None
    kind: str
    data: JSON


@dataclass(frozen=True)
class KeyEstimate:
    """What one memory key is known to need, as the store keeps it (one row a key): what
    admission (``scheduler/admission.py``) loads and puts, and what a job's page shows."""

    memory_key: str
    #: the estimate for its next attempts
    bytes: int
    #: the largest peak seen, and how many peaks
    peak_bytes: int
    samples: int
    #: the largest limit an attempt of the key was OOM-killed at (0: none)
    killed_at: int = 0
    #: the cap an attempt of the key was OOM-killed at: the key needs more (0: none)
    unfit_cap: int = 0
    #: what proved the key unfit (an attempt, its limit, its peak)
    proof: str = ""
    #: sum and sum of squares of the peaks seen (their spread sets the margin)
    peak_sum: float = 0.0
    peak_sq: float = 0.0
    #: when the store last wrote it (None: not stored yet)
    updated_at: float | None = None


@dataclass(frozen=True)
class ThroughputPoint:
    """Attempts of a job ended in one interval of its time line."""

    #: start of the interval
    t: float
    #: its length in seconds
    step: float
    succeeded: int
    failed: int
    #: tasks finished for good by the end of the interval
    done: int


@dataclass(frozen=True)
class KillPoint:
    """An attempt of a job that ran out of memory (an OOM kill, ``memory_error``)."""

    ts: float
    failure_class: str
    key: str | None
    limit_bytes: int | None
    peak_bytes: int | None
    task_id: int
    attempt_id: int
    pid: int | None


__all__ = [
    "AttemptRecord",
    "AttemptSpan",
    "EventRecord",
    "FailedTask",
    "JobListing",
    "JobProgress",
    "JobRecord",
    "JobTimes",
    "KeyEstimate",
    "KillPoint",
    "NewTask",
    "StoredParams",
    "StoredSpec",
    "TaskDetail",
    "TaskListing",
    "TaskRow",
    "ThroughputPoint",
]
