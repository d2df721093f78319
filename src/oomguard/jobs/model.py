"""Jobs, tasks, attempts and outcomes: the names everything else speaks."""

from __future__ import annotations

import enum


class TaskState(str, enum.Enum):
    PENDING = "pending"  # waiting for dependencies (aggregations)
    READY = "ready"  # may run
    QUEUED = "queued"  # taken into a replica's in-memory window, or handed back to one
    RUNNING = "running"  # an attempt holds a lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self.value in FINISHED_STATES


#: states of a task that may still run (a job with such a task is active)
OPEN_STATES = (
    TaskState.PENDING.value,
    TaskState.READY.value,
    TaskState.QUEUED.value,
    TaskState.RUNNING.value,
)
#: states a task ends in
FINISHED_STATES = (
    TaskState.SUCCEEDED.value,
    TaskState.FAILED.value,
    TaskState.CANCELLED.value,
)


class FailureClass(str, enum.Enum):
    """Why an attempt failed. See docs/ARCHITECTURE.md, "Failure classes"."""

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

    # Printed and written as its value (as enum.StrEnum does, from Python 3.11).
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return str(self.value).__format__(spec)


_OOM_CLASSES = frozenset(
    {
        FailureClass.OOM_CGROUP,
        FailureClass.OOM_ANCESTOR,
        FailureClass.OOM_SYSTEM,
        FailureClass.OOM_WATCHDOG,
        FailureClass.MEMORY_ERROR,
    }
)


class KillReason(str, enum.Enum):
    """Why oomguard itself killed an attempt (its evidence's ``killed_by_oomguard``)."""

    #: it ran past its task's timeout
    TIMEOUT = "timeout"
    #: its task was cancelled, or it was stopped for another reason of the scheduler's
    CANCEL = "cancel"
    #: the watchdog saw its memory past its limit (no cgroup)
    WATCHDOG = "watchdog"
    #: the pool stopped
    STOP = "stop"

    # Printed and written as its value (as enum.StrEnum does, from Python 3.11).
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return str(self.value).__format__(spec)
