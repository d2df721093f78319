"""What the Dask executor keeps about the work it has sent to the cluster.

A :class:`Flight` is one Dask task: a group of attempts run one after another on one
worker. :class:`DaskWorkerRef` is where an attempt ran, :class:`Counters` what the executor
has seen so far, and :func:`failure_event` / :class:`Ended` the events a flight's attempts
end in when they do not end with the worker's own outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from distributed import Future

from oomguard.executors.base import Attempt
from oomguard.executors.dask.remote.answers import Evidence, GroupAnswer, Outcome
from oomguard.executors.events import AttemptEnded, Event, Requeued, failed
from oomguard.jobs.model import FailureClass
from oomguard.worker.child import _looks_like_allocation_error

log = logging.getLogger("oomguard.executor.dask")


class BlobWriter(Protocol):
    """Where large results are written as they are fetched (the store's blob files, handed
    to the executor by whoever builds it: the executor opens no store)."""

    def put(self, data: bytes, *, ahead: bool = False) -> str:
        """Write ``data`` (atomic, named by its hash); ``ahead``: before the store's row."""
        ...


@dataclass
class DaskWorkerRef:
    """Where an attempt ran, for the attempt's row (``name`` is the worker's address)."""

    name: str | None = None
    pid: int | None = None


@dataclass
class Flight:
    """One Dask task: a group of attempts run one after another on one worker."""

    runs: Sequence[Attempt]
    future: Future[GroupAnswer]
    limit: int
    sent: float
    #: attempts of the group already ended by :meth:`DaskExecutor.kill`
    dropped: set[int] = field(default_factory=set)
    #: its answer is here (its results being written): it no longer holds a window slot
    fetched: bool = False

    @property
    def key(self) -> str:
        return str(self.future.key)

    def live(self) -> list[Attempt]:
        return [run for run in self.runs if run.attempt_id not in self.dropped]


@dataclass
class Counters:
    submitted: int = 0
    gathered: int = 0
    worker_deaths: int = 0
    requeued: int = 0
    lost_before_gather: int = 0
    #: held results an aggregation's worker took from the worker holding them
    held_from_peers: int = 0
    #: the most attempts in flight at once (at most window x GROUP_MAX_ITEMS)
    max_in_flight: int = 0
    #: the most Dask futures in flight at once (at most the window)
    max_futures_in_flight: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class Ended:
    """An event to hand out at the next poll (queued beside finished futures); None: only
    wakes the poll up (a window slot was freed)."""

    event: Event | None
    status: str = "ended"
    key: str = ""


@dataclass
class Fetched:
    """A finished group's answer, fetched off the loop thread (or what fetching raised)."""

    flight: Flight
    value: GroupAnswer | BaseException


def failure_event(
    run: Attempt,
    fc: str,
    message: str,
    evidence: Evidence,
    peak: int | None,
    address: str | None,
) -> AttemptEnded:
    """The outcome of ``run`` failed with class ``fc`` on the worker at ``address``."""
    return failed(run.attempt_id, fc, message, evidence, peak, address)


def error_events(flight: Flight, err: BaseException) -> list[Event]:
    """The outcomes of a group whose Dask task raised ``err`` (not a worker death):
    ``memory_error`` for an allocation error, else ``error``."""
    fc = (
        "memory_error"
        if isinstance(err, MemoryError) or _looks_like_allocation_error(err)
        else "error"
    )
    message = f"{type(err).__name__}: {err}"
    evidence: Evidence = {"executor": "dask", "dask_error": message}
    return [failure_event(run, fc, message, evidence, None, None) for run in flight.live()]


def outcome_events(
    flight: Flight, outcomes: Sequence[Outcome], address: str | None, counters: Counters
) -> list[Event]:
    """The events of the outcomes a group sent back from the worker at ``address``."""
    events: list[Event] = []
    for outcome in outcomes:
        attempt_id = outcome.attempt_id
        if attempt_id in flight.dropped:
            continue  # ended by kill() while its group went on: the outcome is moot
        if outcome.requeue:
            # Its child died running an attempt before it in the group: never begun.
            counters.requeued += 1
            events.append(Requeued(attempt_id))
            continue
        counters.gathered += 1
        evidence = dict(outcome.evidence, executor="dask")
        events.append(
            AttemptEnded(
                attempt_id,
                outcome.ok,
                outcome.payload,
                FailureClass(outcome.failure_class) if outcome.failure_class else None,
                outcome.message,
                evidence,
                outcome.peak,
                address,
            )
        )
    return events


def fetch_answer(
    flight: Flight,
    blobs: BlobWriter | None,
    blob_threshold: int,
    timeout: float,
    fetched: Callable[[], None] | None = None,
) -> GroupAnswer | BaseException:
    """A finished group's answer (or the exception fetching it raised), fetched on the
    calling thread; with ``blobs``, each result larger than ``blob_threshold`` is written
    there, so that the store finds it and the loop neither writes nor fsyncs it.

    Once the answer is here ``fetched`` is called (the executor releases the future): the
    next Dask task runs while the results are written (none is reported before)."""
    try:
        value = flight.future.result(timeout=timeout)
    except Exception as err:
        return err
    flight.fetched = True
    if fetched is not None:
        fetched()
    if not isinstance(value, GroupAnswer):
        return TypeError(f"a Dask task of oomguard answered {type(value).__name__}")
    if blobs is not None:
        for outcome in value.outcomes:
            payload = outcome.payload
            if outcome.ok and payload is not None and len(payload) > blob_threshold:
                try:
                    blobs.put(payload, ahead=True)
                except Exception as err:  # the store's own put says it, for that task
                    log.info("cannot write a result blob ahead of the loop: %s", err)
    return value


def lost_events(
    flight: Flight, address: str | None, evidence: Evidence, counters: Counters
) -> list[Event]:
    """The group ran, but its results died with their worker before they were gathered:
    each live attempt counts as killed with its worker (and is retried)."""
    live = flight.live()
    counters.lost_before_gather += len(live)
    evidence = {
        "executor": "dask",
        "reason": "the result was lost with its worker before it was gathered",
        **evidence,
    }
    message = "the Dask worker holding its result died before it was gathered"
    return [failure_event(run, "killed", message, evidence, None, address) for run in live]
