"""Jobs that cannot run at all: their first attempts all fail loading the task.

A task reference that names no importable function, or a module whose import fails (a
script that starts a ``Runner`` at import, without ``if __name__ == "__main__":``), fails
every attempt of its job the same way. Retrying each task and running every other task of
the job only repeats the failure (the README's example once burned 2,699 attempts in 90 s
while 4,000,000 tasks were queued). :class:`BrokenJobs` watches each job's attempts: when
its first :data:`STOP_AFTER` failed attempts, with no success before them, all failed with
the same reference error, the job is *stopped*: the attempt that tipped it fails for good,
the job's other unfinished tasks are cancelled with the cause, and the job's state is
``failed`` with the cause (see docs/ARCHITECTURE.md, "Jobs that cannot run").
"""

from __future__ import annotations

from dataclasses import dataclass

from oomguard.jobs.model import FailureClass

#: failed attempts, all with the same reference error and no success before them, that
#: stop a job
STOP_AFTER = 3
#: how an attempt that could not load its task starts its message (the worker writes
#: ``"{type}: {error}"``)
REFERENCE_ERRORS = ("TaskReferenceError: ", "MainGuardError: ")


@dataclass
class _Seen:
    message: str | None = None
    count: int = 0
    #: an attempt succeeded, or failed otherwise: the task can be loaded
    healthy: bool = False


class BrokenJobs:
    """Counts each job's first failures; says when a job is to stop, and why."""

    def __init__(self, stop_after: int = STOP_AFTER) -> None:
        self.stop_after = stop_after
        self._seen: dict[str, _Seen] = {}
        #: jobs to stop → the cause, taken by the loop (:meth:`take`)
        self._due: dict[str, str] = {}
        #: jobs stopped by this scheduler: their late failures are final
        self.stopped: dict[str, str] = {}

    def succeeded(self, job_id: str) -> None:
        seen = self._seen.get(job_id)  # not setdefault: a _Seen made for every success
        if seen is None:
            seen = self._seen[job_id] = _Seen()
        seen.healthy = True

    def failed(self, job_id: str, fc: FailureClass, message: str | None) -> str | None:
        """Count a failed attempt; the cause if the job is (or was just) stopped."""
        if job_id in self.stopped:
            return self.stopped[job_id]
        seen = self._seen.setdefault(job_id, _Seen())
        if seen.healthy:
            return None
        if fc != FailureClass.ERROR or not message or not message.startswith(REFERENCE_ERRORS):
            seen.healthy = True  # the task was loaded: its own failures are its own
            return None
        if seen.message is not None and seen.message != message:
            seen.healthy = True  # failures that differ are not one broken reference
            return None
        seen.message = message
        seen.count += 1
        if seen.count < self.stop_after:
            return None
        cause = (
            f"stopped after its first {seen.count} attempts all failed loading the task: {message}"
        )
        self.stopped[job_id] = self._due[job_id] = cause
        del self._seen[job_id]
        return cause

    def take(self) -> dict[str, str]:
        """The jobs stopped since the last call, with their causes."""
        due, self._due = self._due, {}
        return due

    def forget(self, job_ids: set[str]) -> None:
        """Jobs that finished: nothing more to count for them."""
        for job_id in job_ids:
            self._seen.pop(job_id, None)
            self.stopped.pop(job_id, None)


__all__ = ["REFERENCE_ERRORS", "STOP_AFTER", "BrokenJobs"]
