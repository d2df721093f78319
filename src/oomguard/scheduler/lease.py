"""The scheduler's lease, kept on a thread of its own: it heartbeats, and a replica takes
over the replicas that died (:meth:`~oomguard.store.leases.Leases.take_over_dead`).

On its own thread with its own store connection, so that a long step of the loop (a large
commit, the last Parquet parts) never lets the lease lapse while the process lives; the
loop reads what it found (:attr:`LeaseKeeper.taken_over`, :attr:`LeaseKeeper.takeovers`)
at each step. Fencing does not depend on it: a scheduler taken over has its writes refused
by the store whatever its thread says (docs/ARCHITECTURE.md, "The store").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from oomguard.config import RunnerConfig
from oomguard.errors import StoreError, TakenOverError
from oomguard.store.factory import open_store

if TYPE_CHECKING:
    from oomguard.store.protocol import Store

log = logging.getLogger("oomguard.scheduler")

#: how long stopping waits for the lease thread
STOP_TIMEOUT = 30.0


def heartbeat_every(config: RunnerConfig) -> float:
    """Seconds between heartbeats: several per lease, so one late heartbeat never lets
    the lease expire."""
    return min(config.heartbeat_interval, config.lease_ttl / 3)


class LeaseKeeper:
    """Heartbeats for scheduler ``scheduler_id`` every :func:`heartbeat_every` seconds; a
    replica then takes over the dead ones, and ``wake`` tells the loop (their tasks are
    ready, or this scheduler was itself taken over)."""

    def __init__(self, config: RunnerConfig, scheduler_id: str, wake: Callable[[], None]) -> None:
        self.config = config
        self.scheduler_id = scheduler_id
        self._wake = wake
        #: set once this scheduler was found taken over (the loop raises it)
        self.taken_over: TakenOverError | None = None
        #: how many dead schedulers this one took over (the loop looks for ready tasks)
        self.takeovers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oomguard-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(STOP_TIMEOUT)

    def _run(self) -> None:
        config = self.config
        store = open_store(config.store)
        try:
            while not self._stop.wait(heartbeat_every(config)):
                try:
                    self._beat(store)
                except TakenOverError as err:
                    self.taken_over = err
                    self._wake()
                    return
                except StoreError as err:
                    # Busy or failing: the next beat tries again; if the store stays out of
                    # reach the lease lapses and another replica takes over (fenced).
                    log.warning("scheduler %s: heartbeat failed: %s", self.scheduler_id[:8], err)
        finally:
            store.close()

    def _beat(self, store: Store) -> None:
        config = self.config
        store.leases.heartbeat(self.scheduler_id)
        if not config.replica:
            return
        for taken in store.leases.take_over_dead(
            self.scheduler_id, config.lease_ttl, config.lost_retries
        ):
            log.warning(
                "scheduler %s took over scheduler %s (%s): %d attempts lost, %d tasks ready "
                "again, %d locks released",
                self.scheduler_id[:8],
                taken.scheduler_id[:8],
                taken.reason,
                taken.recovery.lost_attempts,
                taken.recovery.requeued_tasks,
                taken.recovery.released_locks,
            )
            self.takeovers += 1
            self._wake()
