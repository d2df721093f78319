"""Recycling Dask workers: restarting those that grew, hit ``MemoryError`` or ran enough,
without taking the work queued on them along.

The task wrapper collects garbage and trims malloc after every task and reports the
worker's RSS; a worker grown past ``recycle_growth_fraction`` of its memory limit (or past
``max_tasks_per_worker``, or after a ``MemoryError``) is recycled, and counted in
:attr:`Recycler.recycles` by reason. On a thread of its own (the scheduler loop goes on,
and gathers what the worker finishes meanwhile), a recycle:

1. **cordons** the worker (:func:`~oomguard.executors.dask.cluster.cordon`): the Dask
   scheduler assigns it nothing more, and it starts nothing more of what is queued there;
2. **drains** it: waits until it runs nothing of oomguard's and holds no result oomguard
   has not gathered, at most :data:`DRAIN_TIMEOUT_S`;
3. **restarts** it through its nanny, waiting at most :data:`RESTART_TIMEOUT_S` for its
   process to end (not for the new one to join).

The Dask tasks still on the worker at step 3 (queued there and never started, or past the
deadline) die with it: their keys are noted *before* the restart, and
:meth:`Recycler.took` tells the executor that such a death is oomguard's doing, so their
attempts are requeued (not attempts) instead of counted as killed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from oomguard.config import RunnerConfig
from oomguard.executors.dask.cluster import cordon, held_on, restart_worker, uncordon
from oomguard.executors.dask.remote import THREAD
from oomguard.executors.dask.remote.answers import GroupAnswer

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("oomguard.executor.dask")

#: the longest a recycled worker may go on running and holding oomguard's work
DRAIN_TIMEOUT_S = 30.0
#: how often the drain asks the Dask scheduler what the worker still has
DRAIN_POLL_S = 0.1
#: the longest a restart waits for the worker's process to end
RESTART_TIMEOUT_S = 30.0
#: keys noted as dying with a recycled worker (oldest forgotten first): each is asked
#: about within seconds of its worker's restart, if ever
DOOMED_KEEP = 10_000


class Recycler:
    """Decides when a Dask worker is recycled, and recycles it off the caller's thread.

    ``prefix`` starts the keys of the executor's Dask tasks: the only ones it waits for.
    """

    def __init__(self, config: RunnerConfig, prefix: str) -> None:
        self.config = config
        self.prefix = prefix
        #: workers recycled, by reason
        self.recycles: dict[str, int] = {}
        #: workers being recycled (cordoned, draining or restarting)
        self.restarting: set[str] = set()
        #: workers told to restart, whose answer has not come back yet
        self._killing: set[str] = set()
        #: key -> address of the worker it was on when oomguard restarted that worker
        self._doomed: OrderedDict[str, str] = OrderedDict()
        self._tasks_on: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def after_group(
        self, client: Client, address: str, out: GroupAnswer, limit: int | None
    ) -> None:
        """Count the group ``out`` ran on ``address`` and recycle the worker if it is due.

        ``limit`` is the worker's memory limit, where the scheduler reports one.
        """
        outcomes = out.outcomes
        if out.isolation not in (None, THREAD):
            # Attempts ran in the worker's children, which its pool recycles itself
            # (grown, MemoryError, max tasks): the Dask worker did not grow; keep it.
            with self._lock:
                for why, n in out.recycled.items():
                    self.recycles[why] = self.recycles.get(why, 0) + n
            return
        n = self._tasks_on[address] = self._tasks_on.get(address, 0) + len(outcomes)
        reason: str | None = None
        rss, baseline = out.rss_after, out.baseline
        if any(o.failure_class == "memory_error" for o in outcomes):
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

    def recycle(self, client: Client, address: str, reason: str) -> None:
        """Recycle the worker at ``address`` (once, while a recycle of it is under way)."""
        with self._lock:
            if address in self.restarting or self._stop.is_set():
                return
            self.restarting.add(address)
            self.recycles[reason] = self.recycles.get(reason, 0) + 1
            self._threads = [t for t in self._threads if t.is_alive()]
        self._tasks_on.pop(address, None)
        log.info("recycling Dask worker %s (%s)", address, reason)
        thread = threading.Thread(
            target=self._recycle, args=(client, address), name="oomguard-dask-recycle", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def took(self, key: str, address: str | None = None) -> bool:
        """Whether the Dask task ``key`` died because oomguard restarted its worker.

        ``address`` is the worker it died on, where known (``KilledWorker`` says it): the
        key must have been on that very worker.
        """
        with self._lock:
            on = self._doomed.get(key)
            if address is None:
                return on is not None
            return on == address or address in self._killing

    def stop(self, timeout: float) -> None:
        """Recycle no more; cut short the drains under way (their workers are restarted
        at once) and wait at most ``timeout`` seconds for the restarts to end."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("a Dask worker restart is still under way at stop")

    # -- on the recycling thread ----------------------------------------------------------

    def _recycle(self, client: Client, address: str) -> None:
        cordoned = False
        try:
            cordoned = cordon(client, address)
            left = self._drain(client, address) if cordoned else None
            if left is None:
                return  # the scheduler knows it no more (it died): nothing to restart
            self._doom(address, left)
            with self._lock:
                self._killing.add(address)
            self._doom(address, restart_worker(client, address, self.prefix, RESTART_TIMEOUT_S))
            cordoned = False
        except Exception as err:
            log.warning("cannot restart Dask worker %s: %s", address, err)
        finally:
            if cordoned:
                self._uncordon(client, address)
            with self._lock:
                self._killing.discard(address)
                self.restarting.discard(address)

    def _drain(self, client: Client, address: str) -> list[str] | None:
        """Wait until the cordoned worker runs nothing of ours and holds no result we have
        not gathered (the scheduler loop gathers them), at most :data:`DRAIN_TIMEOUT_S`
        or until :meth:`stop`; the keys it still has then, busy or queued. None: the
        worker is gone (it died meanwhile: its deaths are its own, not oomguard's)."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while True:
            got = held_on(client, address, self.prefix)
            if got is None:
                return None
            busy, queued = got
            if not busy:
                return queued
            if time.monotonic() >= deadline or self._stop.is_set():
                log.warning(
                    "restarting Dask worker %s with %d of oomguard's Dask tasks still "
                    "running or not gathered there (they are requeued)",
                    address,
                    len(busy),
                )
                return busy + queued
            self._stop.wait(DRAIN_POLL_S)

    def _doom(self, address: str, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._doomed[key] = address
                self._doomed.move_to_end(key)
            while len(self._doomed) > DOOMED_KEEP:
                self._doomed.popitem(last=False)

    def _uncordon(self, client: Client, address: str) -> None:
        # Not restarted: back to work rather than idle, cordoned, for good.
        try:
            uncordon(client, address)
        except Exception as err:
            log.warning("cannot uncordon Dask worker %s: %s", address, err)
