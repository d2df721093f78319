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
"""

from __future__ import annotations

import typing

from oomguard.errors import OomguardError
from oomguard.jobs import FailureClass, TaskState, task
from oomguard.jobs.command import command
from oomguard.jobs.status import Failure, JobStatus

if typing.TYPE_CHECKING:
    from oomguard.config import RunnerConfig
    from oomguard.runner import Job, Runner

__all__ = [
    "Failure",
    "FailureClass",
    "Job",
    "JobStatus",
    "OomguardError",
    "Runner",
    "RunnerConfig",
    "TaskState",
    "command",
    "task",
]


def __getattr__(name: str) -> object:
    # Lazy, so that worker processes importing oomguard.jobs do not pay for pyarrow & co.
    if name in ("Runner", "Job"):
        from oomguard import runner

        return getattr(runner, name)
    if name == "RunnerConfig":
        from oomguard.config import RunnerConfig

        return RunnerConfig
    raise AttributeError(f"module 'oomguard' has no attribute {name!r}")
