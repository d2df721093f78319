"""Jobs, tasks, attempts and outcomes: the names everything else speaks."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class TaskState(str, enum.Enum):
    PENDING = "pending"  # waiting for dependencies (aggregations)
    READY = "ready"  # may run
    QUEUED = "queued"  # taken into the scheduler's in-memory window
    RUNNING = "running"  # an attempt holds a lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


class FailureClass(str, enum.Enum):
    """Why an attempt failed. See DESIGN.md, "Failure classes"."""

    OOM_CGROUP = "oom_cgroup"
    OOM_ANCESTOR = "oom_ancestor"
    OOM_SYSTEM = "oom_system"
    OOM_WATCHDOG = "oom_watchdog"
    MEMORY_ERROR = "memory_error"
    KILLED = "killed"
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    ERROR = "error"
    LOST = "lost"
    #: a task that was OOM-killed with the largest memory oomguard can give it
    NEEDS_MORE_MEMORY = "needs_more_memory"
    #: an aggregation whose replicates failed for good
    UPSTREAM_FAILED = "upstream_failed"

    @property
    def is_oom(self) -> bool:
        return self in _OOM_CLASSES


_OOM_CLASSES = frozenset(
    {
        FailureClass.OOM_CGROUP,
        FailureClass.OOM_ANCESTOR,
        FailureClass.OOM_SYSTEM,
        FailureClass.OOM_WATCHDOG,
        FailureClass.MEMORY_ERROR,
    }
)


@dataclass
class Outcome:
    """What an attempt ended with: a result or a failure with its class and evidence."""

    attempt_id: int
    ok: bool
    value: bytes | None = None  # pickled result
    failure_class: FailureClass | None = None
    message: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    peak_bytes: int | None = None
    #: the worker asks to be replaced after this attempt (MemoryError, RSS growth)
    recycle: str | None = None
