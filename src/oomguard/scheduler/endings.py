"""Tasks that ended for good, told to a watcher in this process once the store holds them.

A caller in the scheduler's own process (the :class:`~oomguard.executor.pool.Executor`)
watches a job: the recorder holds a :class:`TaskEnded` as each of its tasks succeeds or
fails for good, and the loop hands them over right after the commit that records them
(durability first: a watcher is never told what the store does not have). A task ended by
any other path (cancelled, lost, a commit that failed for it) is not told: the store is
the watcher's fallback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

log = logging.getLogger("oomguard.scheduler")


@dataclass(frozen=True)
class TaskEnded:
    """A task of a watched job ended for good: succeeded with ``value`` (its result as
    stored; None when the store holds it elsewhere, to be read there), or failed as
    ``failure_class``."""

    job_id: str
    task_id: int
    group: int
    value: bytes | None
    failure_class: str | None = None


#: what a watcher is called with (on the scheduler's thread: it must be quick)
Watcher = Callable[[Sequence[TaskEnded]], None]


class Endings:
    """The watchers, by job (thread-safe), and the endings held until their commit (the
    scheduler thread's own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: dict[str, Watcher] = {}
        self._held: list[TaskEnded] = []

    def watch(self, job_id: str, watcher: Watcher) -> None:
        """Call ``watcher`` with the tasks of ``job_id`` that end from now on."""
        with self._lock:
            self._watchers[job_id] = watcher

    def unwatch(self, job_id: str) -> None:
        with self._lock:
            self._watchers.pop(job_id, None)

    def watched(self, job_id: str) -> bool:
        return job_id in self._watchers

    def hold(self, ended: TaskEnded) -> None:
        """Hold ``ended`` until the commit that records it (:meth:`release`)."""
        if ended.job_id in self._watchers:
            self._held.append(ended)

    def release(self, unrecorded: Collection[int] = ()) -> None:
        """The writes queued so far are committed: tell the watchers what they record (a
        task whose own writes could not be stored is not told)."""
        if not self._held:
            return
        held, self._held = self._held, []
        by_job: dict[str, list[TaskEnded]] = {}
        for ended in held:
            if ended.task_id not in unrecorded:
                by_job.setdefault(ended.job_id, []).append(ended)
        with self._lock:
            watchers = [(self._watchers.get(job), batch) for job, batch in by_job.items()]
        for watcher, batch in watchers:
            if watcher is None:
                continue
            try:
                watcher(batch)
            except Exception:
                log.exception("a watcher of ended tasks failed")


__all__ = ["Endings", "TaskEnded", "Watcher"]
