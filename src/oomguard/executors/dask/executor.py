"""The Dask executor: attempts run on an existing Dask distributed cluster.

The same promises as the local pool, on Dask:

* **Bounded in-flight window.** Groups of short attempts go as Dask tasks of up to 32
  (:mod:`~.backlog`), at most ``WINDOW_PER_THREAD`` per worker thread not fetched
  yet; each is released once fetched, and the next runs while its results are written.
* **Nothing finished runs again.** Dask recomputes a finished key whose worker died before
  it was gathered: the scheduler plugin :class:`~.remote.scheduler.StartGuard` swaps such
  a key's task for a refusal as it leaves ``memory`` (no round trip before each Dask
  task; where the guard cannot run, or in ``thread`` mode, each Dask task asks the
  scheduler once); a rerun's attempts are reported killed and retried. The nanny
  tells the attempts a dead worker ran from those it never began (requeued).
* **Memory-aware placement and limits.** Each Dask task asks for ``resources={"MEMORY":
  limit}`` and runs in a child in its own memory cgroup under it (:mod:`~.remote.host_pool`).
* **Off the loop.** Answers are fetched, and large results written as blob files, on fetch
  threads (:func:`~oomguard.executors.dask.flights.fetch_answer`).
* **Aggregations where their inputs are.** Replicates' results are also held on the Dask
  worker that made them; an aggregation is sent there and refers to them instead of
  carrying them (:mod:`~.held`).
* **oomguard retries, Dask does not.** Futures are submitted with ``retries=0``, and the
  scheduler's ``allowed-failures`` is 0: a worker death fails the future with
  ``KilledWorker``, classified from the evidence of :mod:`~.remote`
  (:func:`classify_dask_death`) and reported as a failed outcome, so the scheduler's retry
  and OOM-escalation rules apply unchanged.
* **Recycling.** A worker grown past ``recycle_growth_fraction`` of its memory limit (or
  past ``max_tasks_per_worker``, or after a ``MemoryError``) is cordoned, drained and
  restarted through its nanny (:mod:`~.recycling`), counted in
  :attr:`DaskExecutor.recycles` by reason; an attempt that dies with it is requeued.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from distributed import Client, Future
from distributed.scheduler import KilledWorker

from oomguard.config import RunnerConfig
from oomguard.errors import ConfigError
from oomguard.executors.base import Attempt, ItemReader, WorkerRef
from oomguard.executors.dask.backlog import Backlog
from oomguard.executors.dask.cluster import (
    DaskWorker,
    check_scheduler,
    connect,
    gather_directly,
    isolation_of_workers,
    kill_on_worker,
    processing_on,
    register_plugins,
    scheduler_events,
    started_on_worker,
    workers,
)
from oomguard.executors.dask.deaths import (
    EVIDENCE_WAIT_S,
    PendingDeath,
    classify_dask_death,
    resolve_deaths,
)
from oomguard.executors.dask.flights import (
    BlobWriter,
    Counters,
    DaskWorkerRef,
    Ended,
    Fetched,
    Flight,
    error_events,
    failure_event,
    fetch_answer,
    lost_events,
    outcome_events,
)
from oomguard.executors.dask.held import HeldIndex
from oomguard.executors.dask.recycling import RESTART_TIMEOUT_S, Recycler
from oomguard.executors.dask.remote import DEATH_TOPIC, KEY_PREFIX, NANNY_MEMORY_TOPIC
from oomguard.executors.dask.remote.answers import Evidence, GroupAnswer
from oomguard.executors.dask.remote.tasks import run_calls
from oomguard.executors.events import Event, Requeued
from oomguard.jobs.model import FailureClass, KillReason

if TYPE_CHECKING:
    from oomguard.cgroups.detect import IsolationPlan

log = logging.getLogger("oomguard.executor.dask")

WORKERS_REFRESH_S = 1.0
#: threads fetching finished groups' answers (and writing their large results as blobs)
FETCH_THREADS = 4
#: the longest one fetch waits for a finished group's answer
FETCH_TIMEOUT_S = 60.0
#: Dask futures in flight per worker thread (``config.dask_window_per_thread``): one running
#: and a few queued, so a thread neither waits for a gather nor idles while the loop writes
WINDOW_PER_THREAD = 4
#: why an attempt that died with a worker oomguard restarted is requeued
RECYCLED = "oomguard restarted its Dask worker (recycled) before its outcome was gathered"


class DaskExecutor:
    """Runs attempts as Dask futures on the cluster at ``config.dask_address``."""

    def __init__(
        self,
        config: RunnerConfig,
        isolation: IsolationPlan | None,
        blobs: BlobWriter | None = None,
        blob_threshold: int | None = None,
    ) -> None:
        if (blobs is None) != (blob_threshold is None):
            raise ValueError("blobs and blob_threshold go together")
        if not config.dask_address:
            raise ConfigError(
                "the dask executor needs the scheduler's address: --dask-address tcp://HOST:8786"
            )
        self.config = config
        self.isolation = isolation
        #: the store's blob files: results over ``blob_threshold`` bytes are written there
        #: as they are fetched
        self.blobs = blobs
        self.blob_threshold = blob_threshold or 0
        self._fetcher: ThreadPoolExecutor | None = None
        self.client: Client | None = None
        self.prefix = f"{KEY_PREFIX}{uuid.uuid4().hex[:8]}"
        #: Dask key -> its group of attempts
        self.inflight: dict[str, Flight] = {}
        self.by_attempt: dict[int, Flight] = {}
        self.done: queue.Queue[Future[GroupAnswer] | Ended | Fetched] = queue.Queue()
        #: which worker holds which replicate's result, for its aggregation
        self.held = HeldIndex()
        #: groups of attempts waiting to be sent
        self.backlog = Backlog(lambda event: self.done.put(Ended(event)), self.held)
        self.window_per_thread = int(
            getattr(config, "dask_window_per_thread", None) or WINDOW_PER_THREAD
        )
        self.deaths: list[PendingDeath] = []
        self.recycler = Recycler(config, self.prefix)
        self.counters = Counters()
        self.workers: dict[str, DaskWorker] = {}
        self.has_memory = False
        self._workers_at = 0.0
        self._warned_no_memory = False
        self._started = 0.0
        self._lock = threading.Lock()
        #: how each Dask worker runs attempts (``cgroup-v1``, ``watchdog``, ``thread`` ...)
        self.isolation_modes: dict[str, str] = {}
        #: the scheduler runs oomguard's start guard: no round trip before each Dask task
        self.guarded = False
        #: answers are gathered straight from the workers (not through the scheduler)
        self.direct = False

    # -- start and stop ---------------------------------------------------------------

    @property
    def _client(self) -> Client:
        """The client, once started."""
        assert self.client is not None, "start() first"
        return self.client

    def start(self) -> None:
        self._fetcher = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="oomguard-fetch")
        self.client = connect(self.config)
        self._started = time.time()
        self.guarded = register_plugins(self.client, self.config)
        check_scheduler(self.client)
        self._refresh_workers(force=True)
        self.direct = gather_directly(self._client, list(self.workers))
        self.isolation_modes.update(isolation_of_workers(self._client))

    def stop(self) -> None:
        if self.client is None:
            return
        # Restarts under way end first: they ask the scheduler through this client.
        self.recycler.stop(RESTART_TIMEOUT_S)
        if self._fetcher is not None:
            # Fetches under way end with their futures (cancelled below).
            self._fetcher.shutdown(wait=False, cancel_futures=True)
            self._fetcher = None
        futures = [f.future for f in self.inflight.values()]
        self.inflight.clear()
        self.by_attempt.clear()
        self.backlog.clear()
        try:
            if futures:
                self.client.cancel(futures)
        finally:
            self.client.close()
            self.client = None

    @property
    def recycles(self) -> dict[str, int]:
        """Workers restarted, by reason."""
        return self.recycler.recycles

    @property
    def leftovers(self) -> dict[str, int]:
        """Nothing counted here: each Dask worker's own pool cleans up after its children."""
        return {}

    # -- capacity ---------------------------------------------------------------------

    def _refresh_workers(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._workers_at < WORKERS_REFRESH_S:
            return
        self._workers_at = now
        self.workers = workers(self._client)
        self.held.forget_workers_except(self.workers)
        self.has_memory = bool(self.workers) and all(
            w.memory is not None for w in self.workers.values()
        )
        if self.workers and not self.has_memory and not self._warned_no_memory:
            self._warned_no_memory = True
            log.warning(
                "the Dask workers have no MEMORY resource: attempts are placed without "
                "memory requests (start workers with --resources MEMORY=<bytes>)"
            )

    @property
    def window(self) -> int:
        threads = sum(w.nthreads for w in self.workers.values())
        return max(1, self.window_per_thread * threads)

    def _largest_memory(self) -> int:
        return max(
            (w.memory or 0 for w in self.workers.values()),
            default=0,
        )

    def worker_pids(self) -> dict[str, int]:
        return {}

    def worker_isolation(self) -> dict[str, str]:
        return dict(self.isolation_modes)

    def max_task_memory(self) -> int | None:
        """The most one attempt can get on this cluster: the largest worker's MEMORY."""
        self._refresh_workers(force=True)
        largest = self._largest_memory()
        return largest or None

    def memory_budget(self) -> int | None:
        """The cluster's memory: the sum of its workers' MEMORY resources."""
        total = sum(w.memory or 0 for w in self.workers.values())
        return total or None

    def free_slots(self) -> int:
        if self.client is None:
            return 0
        self._refresh_workers()
        if self.backlog:
            return 0
        return max(0, self.window - self._running())

    # -- submitting -------------------------------------------------------------------

    def submit(self, group: Sequence[Attempt], read_item: ItemReader) -> None:
        # A group shares its first attempt's admission (the others were claimed with 0).
        limit = max(run.limit for run in group) or group[0].limit
        for run in group:
            run.worker = DaskWorkerRef()
        self.backlog.add(group, limit, read_item)
        self._send()

    def _send(self) -> None:
        window = self.window
        while self.backlog and self._running() < window:
            runs, items, limit, at = self.backlog.take()
            if not runs:
                continue  # none of them could be read: each ended with an error outcome
            if runs[0].clean and items:
                # A probe's peak: measured clean (worker/hygiene.py).
                items[0] = replace(items[0], clean=True)
            resources = None
            if self.has_memory and limit:
                resources = {"MEMORY": min(limit, self._largest_memory())}
            # To where most results its aggregations refer to are held; it takes the others
            # from the workers holding them (else: "missing").
            where = {"workers": [at], "allow_other_workers": True, "priority": 1} if at else {}
            peers = self.held.peers(items) if at else {}
            with warnings.catch_warnings():
                # Aggregations carry their replicates' results: not a mistake here.
                warnings.filterwarnings("ignore", message="Sending large graph")
                future = self._client.submit(
                    run_calls,
                    items,
                    limit or None,
                    guarded=self.guarded,
                    peers=peers or None,
                    key=f"{self.prefix}-{runs[0].attempt_id}",
                    resources=resources,
                    retries=0,
                    pure=False,
                    **where,
                )
            flight = Flight(runs, future, limit, time.time())
            self.inflight[flight.key] = flight
            for run in runs:
                self.by_attempt[run.attempt_id] = flight
            future.add_done_callback(self.done.put)
            self.counters.submitted += len(runs)
        self.counters.max_in_flight = max(self.counters.max_in_flight, len(self.by_attempt))
        # A flight whose answer was fetched released its future (its results are being
        # written): it is no longer a Dask future in flight, though it is still tracked.
        self.counters.max_futures_in_flight = max(
            self.counters.max_futures_in_flight, self._running()
        )

    # -- outcomes ---------------------------------------------------------------------

    def wake(self) -> None:
        self.done.put(Ended(None))

    def poll(self, timeout: float) -> list[Event]:
        if self.client is None:
            time.sleep(timeout)
            return []
        self._send()
        done: list[Future[GroupAnswer] | Ended | Fetched] = []
        try:
            done.append(self.done.get(timeout=timeout))
            while True:
                done.append(self.done.get_nowait())
        except queue.Empty:
            pass
        events: list[Event] = []
        for future in done:
            if isinstance(future, Ended):
                events.extend([future.event] if future.event is not None else [])
                continue
            if isinstance(future, Fetched):
                events.extend(self._gathered(future.flight, future.value))
                continue
            flight = self._flight_of(future)
            if flight is None:
                continue  # already ended (killed by us, or stopped)
            if future.status == "finished":
                self._fetch(flight)
            else:
                events.extend(self._failed_future(flight))
        events.extend(self._resolve_deaths())
        self._send()
        return events

    def _fetch(self, flight: Flight) -> None:
        """Fetch a finished group's answer off the loop thread, large results written as
        blob files there (fsync'd); the answer comes back through ``done``."""

        def fetch() -> None:
            self.done.put(
                Fetched(
                    flight,
                    fetch_answer(flight, self.blobs, self.blob_threshold, FETCH_TIMEOUT_S, here),
                )
            )

        def here() -> None:  # its slot is free (poll woken) while its results are written
            flight.future.release()  # nothing stays in distributed memory (but held results)
            self.done.put(Ended(None))

        self._fetcher.submit(fetch) if self._fetcher is not None else fetch()

    def _running(self) -> int:
        """Dask tasks in the window: sent, their answer not fetched yet."""
        return sum(1 for flight in self.inflight.values() if not flight.fetched)

    def _flight_of(self, future: Future[GroupAnswer]) -> Flight | None:
        flight = self.inflight.get(str(future.key))
        return flight if flight is not None and flight.future is future else None

    def _forget(self, flight: Flight) -> None:
        self.inflight.pop(flight.key, None)
        for run in flight.runs:
            if self.by_attempt.get(run.attempt_id) is flight:
                del self.by_attempt[run.attempt_id]

    def _gathered(self, flight: Flight, value: GroupAnswer | BaseException) -> list[Event]:
        """The events of a group whose answer was fetched (or whose fetch raised)."""
        if self.inflight.get(flight.key) is not flight:
            return []  # ended meanwhile (cancelled, stopped)
        self._forget(flight)
        flight.future.release()
        if isinstance(value, BaseException):
            return self._ended_by_error(flight, value)
        return self._outcomes(flight, value)

    def _outcomes(self, flight: Flight, out: GroupAnswer) -> list[Event]:
        address = out.worker
        # The process that ran each attempt: its child, or the Dask worker itself.
        pids = {o.attempt_id: o.pid for o in out.outcomes}
        for run in flight.runs:
            run.worker = DaskWorkerRef(address, pids.get(run.attempt_id) or out.pid)
        if out.duplicate:
            # It had finished, but its worker died before we gathered the results and Dask
            # ran it again: the wrapper refused to, so each attempt counts as killed with
            # its worker, and oomguard retries them under new attempts.
            return self._results_lost(flight, address, {"rerun_on": address})
        if out.missing:  # held inputs gone (held.py): nothing ran; store next time
            return self._requeued(flight, "its inputs held on a Dask worker were gone")
        if address:
            self.held.saw(address, out)
        self.counters.held_from_peers += out.fetched
        if address and out.isolation:
            self.isolation_modes[address] = out.isolation
        self.backlog.saw(flight.runs, out.outcomes, self.isolation_modes)  # sizes tasks
        events = outcome_events(flight, out.outcomes, address, self.counters)
        if address:
            worker = self.workers.get(address)
            limit = worker.memory_limit if worker is not None else None
            self.recycler.after_group(self._client, address, out, limit)
        return events

    def _results_lost(self, flight: Flight, address: str | None, evidence: Evidence) -> list[Event]:
        """The group ran, but its results died with their worker before they were
        gathered: each attempt counts as killed with its worker and is retried (requeued,
        when oomguard restarted that worker)."""
        if self.recycler.took(flight.key):
            return self._requeued(flight, RECYCLED)
        return lost_events(flight, address, evidence, self.counters)

    def _failed_future(self, flight: Flight) -> list[Event]:
        future = flight.future
        status = str(future.status)
        self._forget(flight)
        if status == "cancelled":
            future.release()
            return [Requeued(run.attempt_id) for run in flight.live()]
        err: BaseException | None = None
        if status == "error":
            try:
                err = future.exception(timeout=5)
            except Exception as fetch_err:
                err = fetch_err
        future.release()
        if err is None:
            # Neither finished nor erred: "lost", the worker holding the finished result
            # died and Dask would run it again. Not an error of the task.
            return self._results_lost(flight, None, {"dask_future_status": status})
        return self._ended_by_error(flight, err)

    def _ended_by_error(self, flight: Flight, err: BaseException) -> list[Event]:
        if isinstance(err, KilledWorker):
            last = err.last_worker
            address = str(getattr(last, "address", ""))
            pid = getattr(last, "pid", None)
            for run in flight.runs:
                run.worker = DaskWorkerRef(address, pid)
            self.counters.worker_deaths += 1
            if self.recycler.took(flight.key, address):
                return self._requeued(flight, RECYCLED)
            # Not started as the scheduler heard it: only waiting in the dead worker's
            # queue, unless the worker's own note (the nanny's record) says it began
            # (its start is named to the scheduler with no wait: a SIGKILL can lose it).
            unconfirmed = not started_on_worker(self.client, flight.key)
            self.deaths.append(
                PendingDeath(
                    flight,
                    address,
                    pid,
                    time.monotonic() + EVIDENCE_WAIT_S + self.config.kernel_log_wait,
                    flight.limit,
                    unconfirmed,
                )
            )
            return []
        return error_events(flight, err)

    def _requeued(self, flight: Flight, reason: str | None = None) -> list[Event]:
        live = flight.live()
        self.counters.requeued += len(live)
        if reason is None:
            return [Requeued(run.attempt_id) for run in live]
        return [Requeued(run.attempt_id, reason) for run in live]

    def _resolve_deaths(self) -> list[Event]:
        if not self.deaths:
            return []
        since = self._started - 1
        records = scheduler_events(self._client, DEATH_TOPIC, since)
        restarts = scheduler_events(self._client, NANNY_MEMORY_TOPIC, since)
        with self._lock:
            self.deaths, events = resolve_deaths(
                self.deaths, records, restarts, self.workers, self.counters
            )
        return events

    # -- killing ----------------------------------------------------------------------

    def kill(self, run: Attempt, reason: KillReason, evidence: Evidence) -> None:
        """End an attempt (timeout, cancel): forget its future, restart its worker.

        An attempt in a group with other live attempts is only dropped: the group goes on
        and its outcome is discarded (the scheduler never groups attempts with a timeout;
        a cancel ends the others of the group soon after).
        """
        flight = self.by_attempt.pop(run.attempt_id, None)
        if flight is None:
            return
        flight.dropped.add(run.attempt_id)
        address = None
        if not flight.live():
            address = processing_on(self._client, flight.key)
            killed = "thread"
            if address:
                killed = kill_on_worker(
                    self._client, address, run.attempt_id, reason.value, evidence
                )
            if killed == "killed":
                # Only its child died: the group's answer comes back (its outcome moot)
                # and the Dask worker keeps running, nothing else lost.
                evidence = dict(evidence, killed_on_host=True)
            else:
                self.inflight.pop(flight.key, None)
                self._client.cancel([flight.future])
                if address and killed == "thread":
                    self.recycler.recycle(self._client, address, reason.value)
        fc = FailureClass.TIMEOUT if reason is KillReason.TIMEOUT else FailureClass.KILLED
        evidence = dict(evidence, executor="dask", killed_by_oomguard=reason.value, worker=address)
        self.done.put(
            Ended(
                failure_event(
                    run, fc.value, f"killed by oomguard ({reason})", evidence, None, address
                )
            )
        )

    def release(self, worker: WorkerRef) -> None:
        return None


__all__ = ["DaskExecutor", "DaskWorkerRef", "classify_dask_death"]
