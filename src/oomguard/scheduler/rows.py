"""Task rows, built in one place for every way of submitting (the Python API, the CLI and
the HTTP API): a task's options decide its columns, its parameters are kept inline or in a
blob, and a parameter group is its replicates plus, optionally, their aggregation.
"""

from __future__ import annotations

import json
from typing import Any

from oomguard.config import RunnerConfig
from oomguard.errors import PayloadError
from oomguard.jobs.task import TaskOptions
from oomguard.store.protocol import Store


class TaskRows:
    """Builds rows for :meth:`~oomguard.store.sqlite.Store.add_tasks`."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config

    def fields(self, ref: str, params: dict[str, Any], opts: TaskOptions) -> dict[str, Any]:
        """The tasks-table columns that a task's options decide (retries, memory, lock)."""
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
        return {
            "fn": ref,
            "retries": opts.retries if opts.retries else config.retries,
            "oom_retries": opts.oom_retries,
            "timeout": opts.timeout or config.task_timeout,
            "memory": opts.memory or config.task_memory,
            "memory_key": memory_key,
            "lock_key": lock_key,
        }

    def common(
        self,
        store: Store,
        ref: str,
        params: dict[str, Any],
        text: str,
        opts: TaskOptions,
    ) -> dict[str, Any]:
        """The columns a group's tasks share: their options' and their parameters' (kept
        in a blob file beside ``store`` when large)."""
        return dict(self.fields(ref, params, opts), **store.blobs.params_row(text))

    def group(
        self,
        job_id: str,
        grp: int,
        common: dict[str, Any],
        replicates: int | None,
        aggregate: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Parameter group ``grp``: ``replicates`` tasks (numbered; None: one, unnumbered)
        sharing ``common``, then the aggregation (its ``fields``) waiting on all of them."""
        rows = [
            dict(
                common,
                job_id=job_id,
                grp=grp,
                kind="task",
                replicate=r if replicates else None,
                state="ready",
            )
            for r in range(replicates or 1)
        ]
        if aggregate is not None:
            rows.append(
                dict(
                    aggregate,
                    job_id=job_id,
                    grp=grp,
                    kind="aggregate",
                    params=common["params"],
                    params_ref=common["params_ref"],
                    state="pending",
                    deps=replicates or 1,
                )
            )
        return rows


__all__ = ["TaskRows"]
