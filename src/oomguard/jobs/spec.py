"""A job submission: :class:`JobSpec`, what a job is asked to be, however it was asked.

The Python API (:meth:`oomguard.Runner.sweep`), the CLI (``oomguard run`` options or a spec
file, ``oomguard submit`` of a spec file) and HTTP (``POST /v1/jobs``) all build one with
:func:`job_spec`, which checks what every door checks the same way; each door then maps
its own form (click options, a spec file's keys, the HTTP model) onto these fields. The
parameter sets stay a stream (a params file is never read whole).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from oomguard.errors import PayloadError
from oomguard.jobs.task import reference_of

#: one task's keyword arguments (the user's values)
Params = Mapping[str, object]
#: what a job runs: a reference (``module:function``, ``file.py:function``), a callable
#: (a function or a :class:`~oomguard.jobs.command.Command`)
Task = str | Callable[..., object]


@dataclass(frozen=True)
class JobSpec:
    """One job as submitted: its task, its parameter sets and what the submitter chose.

    ``replicates``: tasks per parameter set (``fn(**p, replicate=i)``); an ``aggregate``
    without replicates means one. ``memory``, ``memory_key``, ``retries`` and ``timeout``
    change the task's own options for this job (None: the task's, or the runner's config).
    """

    #: the task as given (a callable is kept: the runner reads its options)
    task: Task
    #: the reference workers import it by
    reference: str
    params: Iterable[Params]
    replicates: int | None = None
    aggregate: Task | None = None
    aggregate_reference: str | None = None
    #: resuming: submitting a job of the same name (and task) again goes on with it
    name: str | None = None
    #: what ``status`` shows (default: the name)
    title: str | None = None
    out: str | None = None
    batch_size: int | None = None
    namespace: str = "default"
    memory: int | None = None
    memory_key: str | None = None
    retries: int | None = None
    timeout: float | None = None
    #: ``task`` names a program a server's operator declared (``command = NAME``), not a
    #: function: only a server runs it
    declared: bool = False


def job_spec(
    task: Task,
    params: Iterable[Params],
    *,
    replicates: int | None = None,
    aggregate: Task | None = None,
    name: str | None = None,
    title: str | None = None,
    out: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    namespace: str = "default",
    memory: int | None = None,
    memory_key: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    declared: bool = False,
) -> JobSpec:
    """The one builder of a :class:`JobSpec`: references resolved, replicates and batch
    size checked (:class:`~oomguard.errors.PayloadError`). A task's memory, retries and
    timeout are checked by the door against its own limits (a server's, the config's)."""
    if replicates is not None and replicates < 1:
        raise PayloadError(f"replicates must be at least 1, not {replicates}")
    if batch_size is not None and batch_size < 1:
        raise PayloadError(f"batch size must be at least 1, not {batch_size}")
    agg_ref = reference_of(aggregate) if aggregate is not None else None
    if agg_ref and not replicates:
        replicates = 1
    return JobSpec(
        task=task,
        reference=reference_of(task),
        params=params,
        replicates=replicates,
        aggregate=aggregate,
        aggregate_reference=agg_ref,
        name=name,
        title=title,
        out=os.fspath(out) if out is not None else None,
        batch_size=batch_size,
        namespace=namespace,
        memory=memory,
        memory_key=memory_key,
        retries=retries,
        timeout=timeout,
        declared=declared,
    )


__all__ = ["JobSpec", "Params", "Task", "job_spec"]
