"""Errors raised by oomguard.

Every error oomguard raises on purpose derives from :class:`OomguardError`, and carries
the data that explains it as attributes. Errors survive pickling (they cross process
boundaries between workers, the scheduler and Dask), so each defines ``__reduce__``.

::

    OomguardError
    ├── ConfigError              bad option, config key or value
    │   └── InvalidSizeError     a memory size that cannot be parsed ("lots", "-1")
    ├── TaskReferenceError       TASK / AGG names no importable function
    │   └── MainGuardError       a task's module starts a Runner when a worker imports it
    │                            (no ``if __name__ == "__main__":``)
    ├── PayloadError             arguments that are not JSON objects, cannot be pickled,
    │                            or are too large
    ├── StoreError               the store cannot be used
    │   ├── NotAStoreError       the file is not an oomguard store
    │   ├── SchemaTooNewError    the store was written by a newer oomguard
    │   ├── StoreBusyError       another live scheduler owns the store
    │   ├── TakenOverError       this scheduler was found dead and taken over by a
    │   │                        replica: it records nothing more (fencing)
    │   ├── StoreUnavailable     the store itself fails (disk, lock, read-only): nothing
    │   │                        the data written did
    │   └── BlobMissingError     a blob file a row refers to is gone (deleted by hand)
    ├── TaskInputError           a task's inputs cannot be read (a missing blob): its
    │                            attempt fails as ``error``, the loop goes on
    ├── JobNotFoundError         no job with that id (or none the caller may see)
    ├── InputFileNotFoundError   a file named as input (a params file) does not exist
    ├── AccessDeniedError        the caller's role or namespaces do not allow this
    ├── JobActiveError           the job still has work in flight (forget refuses)
    ├── JobStoppedError          the job was stopped: its first attempts all failed
    │                            loading its task (``cause``)
    ├── OutputError              the output directory cannot be used
    ├── IsolationError           memory isolation asked for cannot be had here
    │   └── WorkerSpawnError     worker processes cannot be started (EMFILE, ENOMEM, ...)
    ├── KernelLogUnavailable     the kernel log cannot be read
    ├── BackpressureError        a submission was refused to protect the scheduler
    │                            (code: queue_full, namespace_quota,
    │                            scheduler_memory_pressure, payload_too_large)
    └── ServerConnectionError    an oomguard server could not be reached
"""

from __future__ import annotations


class OomguardError(Exception):
    """Root of every error oomguard raises on purpose."""

    def __init__(self, message: str, **data: object) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        for key, value in data.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, self.data))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[OomguardError], message: str, data: dict[str, object]) -> OomguardError:
    err = cls.__new__(cls)
    OomguardError.__init__(err, message, **data)
    return err


class ConfigError(OomguardError):
    """An option, config file key or environment variable has a bad value."""


class InvalidSizeError(ConfigError):
    """A memory size could not be parsed."""


class TaskReferenceError(OomguardError):
    """A task reference (``module:function`` or ``file.py:function``) cannot be loaded."""


class MainGuardError(TaskReferenceError):
    """A module imported by a worker to find its task starts a :class:`~oomguard.Runner`
    (``ref``: what the worker was importing): the code that starts it must sit under
    ``if __name__ == "__main__":`` (see docs/ARCHITECTURE.md, "Jobs that cannot run")."""


class PayloadError(OomguardError):
    """Task arguments are malformed, cannot be serialised, or are too large."""


class StoreError(OomguardError):
    """The store cannot be opened or used."""


class NotAStoreError(StoreError):
    """The file exists but is not an oomguard store."""


class SchemaTooNewError(StoreError):
    """The store's schema is newer than this oomguard understands."""


class StoreBusyError(StoreError):
    """Another live scheduler holds the store."""


class TakenOverError(StoreError):
    """This scheduler was found dead (its lease expired) and taken over by another replica
    (``scheduler_id``, ``by``): what it still holds is not its own, so it records nothing
    more and stops."""


class StoreUnavailable(StoreError):
    """The store itself cannot be read or written now (a full disk, a lock held too long,
    a read-only store): not caused by what was written (``reason``)."""


class BlobMissingError(StoreError):
    """A blob file that a row refers to is missing (``name``, ``path``)."""


class TaskInputError(OomguardError):
    """A task's inputs (params, payload, its replicates' results) cannot be read."""


class JobNotFoundError(OomguardError):
    """No job with the given id exists in the store."""


class InputFileNotFoundError(OomguardError):
    """A file named as input (``--params FILE``, a spec's ``params``) does not exist
    (``path``)."""


class AccessDeniedError(OomguardError):
    """The caller's role (or namespaces) does not allow what it asked (HTTP 403)."""


class JobActiveError(OomguardError):
    """The job still has unfinished tasks, running attempts or unwritten results."""


class JobStoppedError(OomguardError):
    """The job was stopped because its first attempts all failed loading its task
    (``job_id``, ``cause``); running the same sweep again, once fixed, reopens it."""

    job_id: str
    cause: str


class OutputError(OomguardError):
    """The output directory cannot be created or written."""


class IsolationError(OomguardError):
    """The memory isolation asked for is not available on this machine."""


class WorkerSpawnError(IsolationError):
    """Worker processes could not be started, several times in a row (``tries``)."""


class KernelLogUnavailable(OomguardError):
    """The kernel log cannot be read (permissions, missing device, no journal)."""


class BackpressureError(OomguardError):
    """A submission was refused; ``code`` says why and ``retry_after`` when to retry."""


def too_many_namespaces(
    active: int, most: int, namespace: str, retry_after: float
) -> BackpressureError:
    """The refusal of a submission in ``namespace`` while ``active`` other namespaces
    have pending tasks, ``most`` (``--max-namespaces``) being allowed."""
    return BackpressureError(
        f"{active} namespaces have pending tasks, the most "
        f"--max-namespaces ({most}) allows: retry {namespace!r} once one of them has none",
        code="too_many_namespaces",
        retry_after=retry_after,
        limit=most,
    )


class ServerConnectionError(OomguardError):
    """An oomguard server could not be reached (refused, unresolvable, timed out)."""
