"""What a future of :class:`~oomguard.executor.Executor` fails with when its call did not
end by itself: the worker died, or the call could not fit in memory.

::

    OomguardError
    └── CallFailedError          the call ended without an answer (failure_class says why)
        ├── WorkerDiedError      its worker died (a signal, ``os._exit``, a crash)
        └── CallMemoryError      it could not fit, after the retries (also a MemoryError)

A call's own exception is re-raised as itself, with the worker's traceback attached as
its ``__cause__`` (:class:`RemoteTraceback`, as ``ProcessPoolExecutor`` does).
"""

from __future__ import annotations

from oomguard.errors import OomguardError
from oomguard.jobs.status import Failure


class RemoteTraceback(Exception):
    """The traceback of a call's exception, as the worker printed it."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class CallFailedError(OomguardError):
    """A call ended without an answer: ``failure_class`` (as ``oomguard status`` shows),
    ``kernel_line`` (the kernel's ``Killed process`` line, or None) and ``attempts`` (each
    attempt's ``limit_bytes``, ``peak_bytes`` and ``failure_class``)."""

    failure_class: str
    kernel_line: str | None
    attempts: tuple[dict[str, object], ...]


class WorkerDiedError(CallFailedError):
    """The worker running the call died (killed by a signal, ``os._exit``, a crash); the
    executor and its other calls go on."""


class CallMemoryError(CallFailedError, MemoryError):
    """The call could not fit in memory: it was OOM-killed (or raised MemoryError) at the
    largest limit oomguard could give it, after the retries."""


def _kernel_line(evidence: object) -> str | None:
    if not isinstance(evidence, dict):
        return None
    lines = evidence.get("kernel_lines")
    if isinstance(lines, list):
        for line in lines:
            if isinstance(line, str) and "Killed process" in line:
                return line
        for line in lines:
            if isinstance(line, str):
                return line
    return None


def failure_error(failure: Failure) -> CallFailedError:
    """The exception a future fails with for ``failure`` (a task failed for good)."""
    attempts = tuple(
        {
            "limit_bytes": a.limit_bytes,
            "peak_bytes": a.peak_bytes,
            "failure_class": a.failure_class,
        }
        for a in failure.attempts
    )
    kernel_line = None
    for attempt in reversed(failure.attempts):
        kernel_line = _kernel_line(attempt.evidence)
        if kernel_line is not None:
            break
    fc = failure.failure_class or "error"
    memory = fc in (
        "oom_cgroup",
        "oom_ancestor",
        "oom_system",
        "oom_watchdog",
        "memory_error",
        "needs_more_memory",
    )
    cls: type[CallFailedError] = (
        CallMemoryError
        if memory
        else WorkerDiedError
        if fc in ("killed", "crashed")
        else CallFailedError
    )
    message = f"the call failed ({fc}) after {len(attempts)} attempt(s): {failure.error or fc}"
    if kernel_line:
        message += f"; the kernel: {kernel_line}"
    return cls(message, failure_class=fc, kernel_line=kernel_line, attempts=attempts)
