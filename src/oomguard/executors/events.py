"""What executors report to the scheduler: one frozen dataclass per kind of event.

:meth:`~oomguard.executors.base.Executor.poll` returns a list of :data:`Event`:

* :class:`AttemptEnded` — the attempt reported its outcome: a pickled result, or a failure
  with its class, message and evidence (a task error, ``memory_error``, a timeout or a
  death classified by the executor itself, as on Dask).
* :class:`WorkerDied` — the local worker running the attempt died without reporting; the
  scheduler classifies the death with the kernel's evidence (it may wait for the kernel's
  ``Killed process`` line).
* :class:`Requeued` — the attempt never started (its worker died first, or none could be
  started): the task goes back to the queue without using an attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from oomguard.jobs.model import FailureClass

if TYPE_CHECKING:
    from oomguard.cgroups.cgroup import CgroupCounters
    from oomguard.worker.pool import Died


@dataclass(slots=True)
class AttemptEnded:
    """How one attempt ended, as an executor tells it. Not frozen (never changed once
    made): one is made for each attempt on the scheduler's loop, and a frozen ``__init__``
    of its eight fields costs several times a plain one."""

    attempt_id: int
    ok: bool
    #: the pickled result (``ok``), else None
    payload: bytes | None = None
    #: why it failed (not ``ok``), else None
    failure_class: FailureClass | None = None
    message: str | None = None
    evidence: dict[str, object] = field(default_factory=dict)
    peak_bytes: int | None = None
    #: where it ran: a local worker's name, or a Dask worker's address
    worker: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerDied:
    attempt_id: int
    death: Died
    #: the worker cgroup's counters read right after the death (before it is removed)
    counters_after: CgroupCounters | None


@dataclass(frozen=True, slots=True)
class Requeued:
    attempt_id: int
    reason: str = "its worker died before starting it"


Event = AttemptEnded | WorkerDied | Requeued


def failed(
    attempt_id: int,
    failure_class: FailureClass | str,
    message: str | None,
    evidence: dict[str, object],
    peak_bytes: int | None = None,
    worker: str | None = None,
) -> AttemptEnded:
    """An :class:`AttemptEnded` for a failure of class ``failure_class`` (a class's value
    is taken for its :class:`FailureClass`)."""
    return AttemptEnded(
        attempt_id,
        False,
        None,
        FailureClass(failure_class),
        message,
        evidence,
        peak_bytes,
        worker,
    )


__all__ = ["AttemptEnded", "Event", "Requeued", "WorkerDied", "failed"]
