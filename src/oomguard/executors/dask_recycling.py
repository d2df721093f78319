"""Recycling Dask workers: restarting those that grew, hit ``MemoryError`` or ran enough.

The task wrapper collects garbage and trims malloc after every task and reports the
worker's RSS; a worker grown past ``recycle_growth_fraction`` of its memory limit (or past
``max_tasks_per_worker``, or after a ``MemoryError``) is restarted through its nanny, off
the caller's thread, and counted in :attr:`Recycler.recycles` by reason.
"""

from __future__ import annotations

import logging
from typing import Any

from oomguard.config import RunnerConfig
from oomguard.executors.dask_client import restart_in_background

log = logging.getLogger("oomguard.executor.dask")


class Recycler:
    """Decides when a Dask worker is restarted, and restarts it."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        #: workers restarted, by reason
        self.recycles: dict[str, int] = {}
        #: workers oomguard is restarting: their deaths are not their tasks' fault
        self.restarting: set[str] = set()
        self._tasks_on: dict[str, int] = {}

    def after_group(
        self, client: Any, address: str, out: dict[str, Any], limit: int | None
    ) -> None:
        """Count the group ``out`` ran on ``address`` and restart the worker if it is due.

        ``limit`` is the worker's memory limit, where the scheduler reports one.
        """
        outcomes = out.get("outcomes") or []
        n = self._tasks_on[address] = self._tasks_on.get(address, 0) + len(outcomes)
        reason = None
        rss, baseline = out.get("rss_after"), out.get("baseline")
        if any(o.get("failure_class") == "memory_error" for o in outcomes):
            reason = "memory_error"
        elif (
            limit
            and rss is not None
            and baseline is not None
            and (rss - baseline > self.config.recycle_growth_fraction * limit)
        ):
            reason = "rss_growth"
        elif self.config.max_tasks_per_worker and n >= self.config.max_tasks_per_worker:
            reason = "max_tasks"
        if reason is not None:
            self.recycle(client, address, reason)

    def recycle(self, client: Any, address: str, reason: str) -> None:
        """Restart the worker at ``address`` (once, while a restart is under way)."""
        if address in self.restarting:
            return
        self.restarting.add(address)
        self._tasks_on.pop(address, None)
        self.recycles[reason] = self.recycles.get(reason, 0) + 1
        log.info("restarting Dask worker %s (%s)", address, reason)
        restart_in_background(client, address)
