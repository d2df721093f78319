"""``oomguard.Executor``: a drop-in for ``concurrent.futures.ProcessPoolExecutor`` that an
OOM kill cannot break (the executor in ``pool``, a call by value in ``call``, what a
future fails with in ``exceptions``)."""

from oomguard.executor.exceptions import (
    CallFailedError,
    CallMemoryError,
    RemoteTraceback,
    WorkerDiedError,
)
from oomguard.executor.pool import Executor

__all__ = [
    "CallFailedError",
    "CallMemoryError",
    "Executor",
    "RemoteTraceback",
    "WorkerDiedError",
]
