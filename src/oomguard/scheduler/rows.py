"""Task rows, built in one place for every way of submitting (the Python API, the CLI and
the HTTP API): a task's options decide its columns, its parameters are kept inline or in a
blob, and a parameter group is its replicates plus, optionally, their aggregation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

from oomguard.config import RunnerConfig
from oomguard.errors import PayloadError
from oomguard.jobs.task import TaskOptions
from oomguard.store.protocol import Store
from oomguard.store.records import NewTask, StoredParams


@dataclass(slots=True)
class TaskFields:
    """The columns a task's function and options decide, and its parameters' (shared by
    the tasks of a parameter group). Not frozen for the reason :class:`NewTask` is not:
    one is built per parameter group."""

    fn: str
    retries: int
    oom_retries: int
    timeout: float | None
    memory: int | None
    memory_key: str | None
    lock_key: str | None
    #: the parameters' JSON text, or the blob holding it (``params_ref``)
    params: str | None = None
    params_ref: str | None = None

    def task(
        self,
        job_id: str,
        grp: int,
        *,
        kind: str,
        state: str,
        replicate: int | None = None,
        deps: int = 0,
    ) -> NewTask:
        """A task of group ``grp`` with these columns."""
        return NewTask(
            job_id=job_id,
            grp=grp,
            kind=kind,
            state=state,
            replicate=replicate,
            deps=deps,
            fn=self.fn,
            retries=self.retries,
            oom_retries=self.oom_retries,
            timeout=self.timeout,
            memory=self.memory,
            memory_key=self.memory_key,
            lock_key=self.lock_key,
            params=self.params,
            params_ref=self.params_ref,
        )


class TaskRows:
    """Builds :class:`~oomguard.store.records.NewTask` records for
    :meth:`~oomguard.store.protocol.Store.add_tasks`."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config

    def fields(
        self,
        ref: str,
        params: Mapping[str, object],
        opts: TaskOptions,
        stored: StoredParams | None = None,
    ) -> TaskFields:
        """The tasks-table columns that a task's options decide (retries, memory, lock),
        with the parameters as ``stored`` (None: none)."""
        config = self.config
        key_param = opts.memory_key or config.memory_key
        memory_key = None
        if key_param is not None:
            memory_key = f"{ref}|{key_param}={json.dumps(params.get(key_param))}"
        lock_key = None
        if opts.lock:
            try:
                lock_key = opts.lock.format(**params)
            except (KeyError, IndexError, ValueError) as err:
                raise PayloadError(
                    f"lock {opts.lock!r} cannot be formatted from {params!r:.80}: {err}"
                ) from err
        return TaskFields(
            fn=ref,
            retries=opts.retries if opts.retries else config.retries,
            oom_retries=opts.oom_retries,
            timeout=opts.timeout or config.task_timeout,
            memory=opts.memory or config.task_memory,
            memory_key=memory_key,
            lock_key=lock_key,
            params=stored.params if stored is not None else None,
            params_ref=stored.params_ref if stored is not None else None,
        )

    def common(
        self,
        store: Store,
        ref: str,
        params: Mapping[str, object],
        text: str,
        opts: TaskOptions,
    ) -> TaskFields:
        """The columns a group's tasks share: their options' and their parameters' (kept
        in a blob file beside ``store`` when large)."""
        return self.fields(ref, params, opts, store.blobs.params_row(text))

    def group(
        self,
        job_id: str,
        grp: int,
        common: TaskFields,
        replicates: int | None,
        aggregate: TaskFields | None = None,
    ) -> list[NewTask]:
        """Parameter group ``grp``: ``replicates`` tasks (numbered; None: one, unnumbered)
        sharing ``common``, then the aggregation (its ``fields``) waiting on all of them."""
        rows = [
            common.task(
                job_id, grp, kind="task", replicate=r if replicates else None, state="ready"
            )
            for r in range(replicates or 1)
        ]
        if aggregate is not None:
            rows.append(
                replace(aggregate, params=common.params, params_ref=common.params_ref).task(
                    job_id, grp, kind="aggregate", state="pending", deps=replicates or 1
                )
            )
        return rows


__all__ = ["TaskFields", "TaskRows"]
