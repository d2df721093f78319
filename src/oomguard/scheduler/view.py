"""What other threads (the HTTP API, the CLI) may read of a running scheduler.

The loop publishes a new frozen :class:`SchedulerView` every quarter second; readers take
the current one (an attribute read is atomic) and never touch the loop's live objects.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field


class Announcements:
    """Wakes the waiters of other threads (``Job.wait``) when a job finishes or the loop
    stops: they sleep on a condition instead of asking the store again and again."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count = 0

    def announce(self) -> None:
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    def count(self) -> int:
        """How many announcements so far (what :meth:`wait` compares against)."""
        return self._count

    def wait(self, seen: int, timeout: float) -> bool:
        """Block until an announcement after ``seen`` (or ``timeout``); True if one came."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count != seen, timeout)


@dataclass(frozen=True)
class SchedulerView:
    """A snapshot of the scheduler, as the loop last published it."""

    started: bool = False
    #: the memory budget admission hands out (bytes)
    budget: int = 0
    #: memory admitted to attempts in flight (bytes)
    admitted: int = 0
    running: int = 0
    #: tasks taken from the store into memory, not yet dispatched
    window: int = 0
    isolation: str | None = None
    #: why that isolation mode, and what the operator should know about it
    isolation_reason: str = ""
    warnings: tuple[str, ...] = ()
    #: attempts of a dead scheduler this one found running at start, ended as lost
    lost_attempts_recovered: int = 0
    #: worker name → pid (the local pool's workers; empty on Dask)
    workers: dict[str, int] = field(default_factory=dict)
    #: worker name (a Dask worker's address) → how it isolates attempts
    worker_isolation: dict[str, str] = field(default_factory=dict)
    #: worker recycles by reason
    recycles: dict[str, int] = field(default_factory=dict)
    #: what was cleaned up after workers, by kind (processes_killed, cgroups_not_removed)
    leftovers: dict[str, int] = field(default_factory=dict)
    #: late duplicate outcomes discarded
    duplicates: int = 0
    #: the active jobs, as the loop last read them from the store
    active_jobs: tuple[str, ...] = ()
    #: job id -> (attempts in flight, bytes admitted to them), for the jobs with some
    in_flight: Mapping[str, tuple[int, int]] = field(default_factory=dict)


__all__ = ["SchedulerView"]
