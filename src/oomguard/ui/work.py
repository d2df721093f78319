"""The work page: what still runs and waits, per job and overall, and the memory admitted
to running attempts against the scheduler's budget (its latest sample, live while work
remains).

Reads only (``store.dashboard``, ``store.queries``). See docs/ARCHITECTURE.md ("The
dashboard").
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass

from oomguard.store.dashboard import MemoryNow, OpenJob
from oomguard.store.protocol import Store

#: jobs listed (most running first); the totals count every one
JOBS_SHOWN = 100
#: a sample older than this (seconds) is said to be old: no scheduler may be sampling
STALE_AFTER = 10.0


@dataclass(frozen=True)
class WorkPage:
    """What the work page shows."""

    jobs: list[OpenJob]
    running: int
    waiting: int
    #: jobs with work still to run, listed or not
    open_jobs: int
    #: None: no sample taken (no scheduler has run against this store with the sampler)
    memory: MemoryNow | None
    #: seconds since the latest sample (None: none)
    age: float | None
    stale: bool
    #: admitted against the budget, in percent (0 without a sample)
    percent: float


def work_page(
    store: Store, namespaces: Collection[str] | None, shown: int = JOBS_SHOWN
) -> WorkPage:
    """The open work of ``namespaces`` (None: of all) and the memory now."""
    jobs = store.dashboard.open_work(namespaces, shown)
    totals = store.dashboard.open_totals(namespaces)
    memory = store.dashboard.memory_now() if store.samples.available() else None
    age = None if memory is None else max(0.0, time.time() - memory.ts)
    percent = 0.0
    if memory is not None and memory.budget_bytes:
        percent = round(100.0 * memory.admitted_bytes / memory.budget_bytes, 1)
    return WorkPage(
        jobs=jobs,
        running=totals.running,
        waiting=totals.waiting,
        open_jobs=totals.jobs,
        memory=memory,
        age=age,
        stale=age is not None and age > STALE_AFTER,
        percent=percent,
    )


__all__ = ["JOBS_SHOWN", "STALE_AFTER", "WorkPage", "work_page"]
