"""The messages between the pool and a worker process, as typed values pickled whole.

The pool sends a worker a :class:`Batch` of attempts, or ``None`` (exit). A worker says
:class:`Ready` once, when it is in its cgroup; then it answers each attempt of a batch with
an :class:`Outcome`, and the batch with :class:`Idle`. A batch whose limit it could not
lower (the kernel refused: it holds more than the new limit even after giving memory back)
is answered with :class:`Refused` and ``Idle(rss, "limit_change")``: nothing of it ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oomguard.jobs.model import FailureClass


@dataclass(frozen=True, slots=True)
class Batch:
    """Attempts a worker runs in order, under one memory limit."""

    items: list[dict[str, Any]]
    #: the limit the attempts run under (bytes; None: unlimited), for the worker's hygiene
    limit: int | None
    #: the worker lowers its own cgroup's limit to ``limit`` first (after giving memory
    #: back: the kernel will not lower a limit below what the cgroup holds)
    lower: bool = False
    #: the first attempt must measure a clean peak (worker/hygiene.py)
    clean: bool = False


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker is in its cgroup with its ``oom_score_adj`` set."""

    pid: int
    #: its resident memory with oomguard imported, after giving memory back
    baseline_rss: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt of a batch ended."""

    attempt_id: int
    ok: bool
    #: the pickled result (``ok``), else None
    payload: bytes | None
    failure_class: FailureClass | None
    message: str | None
    #: what was measured around the attempt (JSON: written to the store as it is)
    evidence: dict[str, object] = field(default_factory=dict)
    #: the attempt's peak memory (bytes), where it could be read
    peak_bytes: int | None = None
    #: the worker is to be recycled after its batch, for this reason (``memory_error``)
    recycle: str | None = None


@dataclass(frozen=True, slots=True)
class Idle:
    """The worker finished its batch (or refused it) and waits for the next."""

    rss_bytes: int
    #: it asks to be recycled, for this reason (``memory_error``, ``rss_growth``,
    #: ``max_tasks``, ``limit_change``); None: it can take another batch
    recycle: str | None


@dataclass(frozen=True, slots=True)
class Refused:
    """The worker could not lower its limit for a batch: none of it ran."""

    message: str
    #: the batch's attempts (filled in by the pool, which knows what it sent)
    attempt_ids: tuple[int, ...] = ()


#: what a worker sends the pool
Message = Ready | Outcome | Idle | Refused

__all__ = ["Batch", "Idle", "Message", "Outcome", "Ready", "Refused"]
