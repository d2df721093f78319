"""Request and response bodies of the HTTP API (pydantic models; unknown fields refused)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

TASK_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z][A-Za-z0-9_]*$"
NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
COMMAND_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$"
MAX_COUNT = 10_000_000

#: what a field whose pattern a value missed takes, in words (a 422 says these, not the
#: regular expressions), by the field's name
PATTERN_WORDS = {
    "task": "must be module:function, a function of one of the modules the server was "
    "started with (serve --tasks-module MODULE; by default oomguard.examples), e.g. "
    "oomguard.examples:noop; a server imports no file sent to it, so a path (sweep.py:f) "
    "is refused",
    "command": "must be the name of a program the server's operator declared "
    "(serve --commands FILE): letters, digits, '_', '.' or '-', starting with a letter",
    "namespace": "must be 1 to 63 letters, digits, '_', '.' or '-', starting with a letter "
    "or digit",
    "memory_key": "must be the name of an argument: letters, digits and '_', not starting "
    "with a digit",
    "state": "must be a task state in lower case (pending, ready, queued, running, "
    "succeeded, failed, cancelled)",
    "class": "must be a failure class in lower case (oom_cgroup, error, timeout, ...)",
}
PATTERN_WORDS["aggregate"] = PATTERN_WORDS["task"].replace(
    "module:function, a function", "module:function, an aggregation function"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitRequest(_Strict):
    """A submission: one task, ``count`` identical tasks, or an explicit list.

    * one task: ``{"task": "oomguard.examples:noop", "args": {"x": 1}}``
    * a batch of ``count`` parameter groups, each called with ``args``
    * a batch from a list: ``"tasks": [{...}, ...]``, each item's keys merged over ``args``
    * a program instead of a function: ``"command": NAME``, one the operator declared
      (``serve --commands FILE``), its template filled from the arguments

    ``aggregate``, ``memory``, ``memory_key``, ``retries`` and ``timeout`` are those of a
    spec file (``oomguard run study.toml``), checked against the server's limits.

    ``fanout``: tasks per parameter group (replicates); with ``fanout > 1`` each task is
    called ``fn(**args, replicate=i)``, so the function must accept ``replicate``.
    ``batch_size``: rows per insert transaction while the batch is stored (the scheduler
    starts on the first rows while the rest are written).
    The job holds ``groups * fanout`` tasks and is accepted whole or refused whole.
    """

    task: str | None = Field(
        default=None,
        pattern=TASK_PATTERN,
        max_length=300,
        description="module:function, from one of the server's allowed task modules",
        examples=["oomguard.examples:noop"],
    )
    command: str | None = Field(
        default=None,
        pattern=COMMAND_PATTERN,
        description="the name of a program the server's operator declared (--commands)",
    )
    aggregate: str | None = Field(
        default=None,
        pattern=TASK_PATTERN,
        max_length=300,
        description="module:function called as agg(args, results) once a group succeeded",
    )
    memory: int | str | None = Field(
        default=None,
        description="declared memory of each task (bytes, or a size such as 512MiB), at "
        "most what one task may get on this server",
    )
    memory_key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$",
        description="the argument whose value keys learned memory estimates",
    )
    retries: int | None = Field(
        default=None, ge=0, description="retries after an error (at most serve --max-retries)"
    )
    timeout: float | None = Field(
        default=None, gt=0, description="seconds a task may run (at most serve --timeout)"
    )
    args: dict[str, object] = Field(
        default_factory=dict, description="keyword arguments (JSON) of every task"
    )
    namespace: str = Field(default="default", pattern=NAMESPACE_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    count: int | None = Field(
        default=None, ge=1, le=MAX_COUNT, description="number of parameter groups"
    )
    tasks: list[dict[str, object]] | None = Field(
        default=None, min_length=1, description="one parameter group per item"
    )
    fanout: int = Field(default=1, ge=1, le=10_000, description="tasks per parameter group")
    batch_size: int | None = Field(
        default=None, ge=1, le=1_000_000, description="rows per insert transaction"
    )

    @model_validator(mode="after")
    def _one_form(self) -> SubmitRequest:
        if self.count is not None and self.tasks is not None:
            raise ValueError("give either count or tasks, not both")
        if (self.task is None) == (self.command is None):
            raise ValueError("give either task or command (one of them)")
        if isinstance(self.memory, str) and len(self.memory) > 32:
            raise ValueError("memory: at most 32 characters")
        return self

    @property
    def groups(self) -> int:
        if self.tasks is not None:
            return len(self.tasks)
        return self.count if self.count is not None else 1

    @property
    def total(self) -> int:
        """Tasks: ``fanout`` per group, and an aggregation per group with ``aggregate``."""
        return self.groups * (self.fanout + (1 if self.aggregate else 0))


class SubmitResponse(_Strict):
    job_id: str
    tasks: int
    groups: int
    namespace: str
    status_url: str


class JobStatus(_Strict):
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
    #: why the job was stopped: its first attempts all failed loading its task
    stopped: str | None = None
    out: str | None = None
    memory_budget_bytes: int | None = None
    isolation: str | None = None


class FailureList(_Strict):
    """A job's tasks that failed for good, each with every attempt and its evidence (the
    kernel's lines, the limit, the peak, the traceback): what ``oomguard status`` tells."""

    job_id: str
    failures: list[Mapping[str, object]]


class JobSummary(_Strict):
    job_id: str
    name: str
    namespace: str
    fn: str
    state: str
    created_at: float


class JobList(_Strict):
    jobs: list[JobSummary]


class TaskInfo(_Strict):
    task_id: int
    group: int
    kind: str
    replicate: int | None
    fn: str
    state: str
    attempts: int
    failure_class: str | None
    error: str | None
    #: the task's arguments, with ``?params=full`` (None otherwise)
    params: Mapping[str, object] | None
    #: asked for, but not listed: too large (kept in a blob file) or not listable JSON
    params_truncated: bool = False


class TaskList(_Strict):
    job_id: str
    tasks: list[TaskInfo]
    #: the answer reached its size: more tasks may follow ``next_after``
    truncated: bool = False
    #: ask again with ``after=`` this task id for the next tasks
    next_after: int | None = None


class CancelResponse(_Strict):
    job_id: str
    cancelled: int


class ForgetResponse(_Strict):
    job_id: str
    tasks: int
    attempts: int
    results: int
    events: int


class HeapSite(_Strict):
    site: str
    size_bytes: int
    count: int


class HeapReport(_Strict):
    traced_current_bytes: int
    traced_peak_bytes: int
    rss_bytes: int
    top: list[HeapSite]


class Health(_Strict):
    status: str
    scheduler_alive: bool
    pending_tasks: int
    memory_pressure: bool


class ErrorDetail(_Strict):
    code: str
    message: str
    details: object = None


class ErrorBody(_Strict):
    error: ErrorDetail


__all__ = [
    "CancelResponse",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "HeapReport",
    "HeapSite",
    "JobList",
    "JobStatus",
    "JobSummary",
    "SubmitRequest",
    "SubmitResponse",
    "TaskInfo",
    "TaskList",
]
