"""oomguard: a job runner that survives the out-of-memory killer.

The public API::

    import oomguard

    @oomguard.task(retries=2, memory="512MiB")
    def simulate(n_agents, replicate): ...

    with oomguard.Runner(store="sweep.sqlite", workers=4) as runner:
        job = runner.sweep(simulate, params, replicates=3, aggregate=mean, out="results/")
        job.wait()
        table = job.results()

    job = runner.sweep(oomguard.command("simulate --agents {n_agents}"), params)

    with oomguard.Executor(max_workers=4, worker_memory="2GiB") as ex:  # as ProcessPoolExecutor
        results = list(ex.map(simulate_one, range(100), chunksize=8))
"""

from __future__ import annotations

import typing

from oomguard.errors import OomguardError
from oomguard.jobs import FailureClass, TaskState, task
from oomguard.jobs.command import command
from oomguard.jobs.status import Failure, JobStatus

if typing.TYPE_CHECKING:
    from oomguard.config import RunnerConfig
    from oomguard.executor import CallFailedError, CallMemoryError, Executor, WorkerDiedError
    from oomguard.runner import Job, Runner

__all__ = [
    "CallFailedError",
    "CallMemoryError",
    "Executor",
    "Failure",
    "FailureClass",
    "Job",
    "JobStatus",
    "OomguardError",
    "Runner",
    "RunnerConfig",
    "TaskState",
    "WorkerDiedError",
    "command",
    "task",
]


def __getattr__(name: str) -> object:
    # Lazy, so that worker processes importing oomguard.jobs do not pay for pyarrow & co.
    if name in ("Runner", "Job"):
        from oomguard import runner

        return getattr(runner, name)
    if name in ("Executor", "CallFailedError", "CallMemoryError", "WorkerDiedError"):
        from oomguard import executor

        return getattr(executor, name)
    if name == "RunnerConfig":
        from oomguard.config import RunnerConfig

        return RunnerConfig
    raise AttributeError(f"module 'oomguard' has no attribute {name!r}")
