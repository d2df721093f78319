"""Why a Dask worker died, and what its death means for the group it was running.

When an attempt's future fails with ``KilledWorker``, the executor keeps a
:class:`PendingDeath` until the evidence of :mod:`oomguard.executors.dask.remote` arrives
(or :data:`EVIDENCE_WAIT_S` passes): the nanny's death record and its own memory-limit
restart event, matched to the death by pid (:func:`match_event`).
:func:`classify_dask_death` turns that evidence into a failure class, and
:func:`group_death_events` into the outcomes of the group's attempts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from oomguard.diagnosis import classify
from oomguard.diagnosis.classify import describe_status
from oomguard.executors.dask.cluster import DaskWorker
from oomguard.executors.dask.flights import Counters, Flight, failure_event
from oomguard.executors.dask.remote.answers import DeathRecord, Evidence, as_json
from oomguard.executors.events import Event, Requeued
from oomguard.jobs.model import FailureClass

#: how long to wait for the nanny's death record after a worker died
EVIDENCE_WAIT_S = 1.5


@dataclass
class PendingDeath:
    flight: Flight
    address: str
    pid: int | None
    deadline: float
    limit: int
    #: the Dask scheduler never heard the group start: the worker names a key as started
    #: on its stream with no wait, so a SIGKILL can lose that note after the group began;
    #: only the worker's own progress note (in the nanny's record) then says it began
    unconfirmed: bool = False


def classify_dask_death(
    *,
    pid: int | None,
    address: str,
    record: DeathRecord | None,
    nanny_restart: Mapping[str, object] | None,
    memory_limit: int | None,
) -> tuple[FailureClass, Evidence, int | None]:
    """The class of a Dask worker's death, the evidence that decided it, and its peak.

    ``record`` is the nanny plugin's death record, ``nanny_restart`` the nanny's own
    ``worker-restart-memory`` event for the pid; either may be missing (no nanny, plugin
    not registered, evidence late). The rules are
    :func:`oomguard.diagnosis.classify.classify_dask_death`'s, beside the local ones.
    """
    evidence: Evidence = {"executor": "dask", "worker": address, "pid": pid}
    exitcode = record.exitcode if record is not None else None
    if exitcode is not None:
        # multiprocessing's exitcode: -N for "killed by signal N", as a wait status.
        status = (-exitcode) & 0x7F if exitcode < 0 else (exitcode & 0xFF) << 8
        evidence.update(describe_status(status))
        evidence["exitcode"] = exitcode
    wire = record.to_json() if record is not None else {}
    for key in (
        "start_time",
        "rss",
        "peak_rss",
        "memory_limit",
        "counters_before",
        "counters_after",
        "kernel",
        "kernel_lines",
        "kernel_log",
        "nanny_terminated",
    ):
        if wire.get(key) is not None:
            evidence["pid_start_time" if key == "start_time" else key] = wire[key]
    if record is None:
        evidence["nanny_record"] = "none received: no nanny, or the plugin is not registered"
    limit = (record.memory_limit if record is not None else None) or memory_limit
    if limit:
        evidence["worker_memory_limit"] = limit
    restart_rss = nanny_restart.get("rss") if nanny_restart is not None else None
    peak = (
        (record.peak_rss if record is not None else None)
        or (restart_rss if isinstance(restart_rss, int) else None)
        or None
    )
    before = record.counters_before if record is not None else None
    after = record.counters_after if record is not None else None
    fc, killed_by = classify.classify_dask_death(
        exitcode=exitcode,
        kernel_event=record.kernel if record is not None else None,
        counters_before=before.counters if before is not None else None,
        counters_after=after.counters if after is not None else None,
        nanny_terminated=nanny_restart is not None
        or (record is not None and record.nanny_terminated),
        last_rss=record.rss if record is not None else None,
        memory_limit=limit,
    )
    if killed_by is not None:
        evidence["killed_by"] = killed_by
    if fc is FailureClass.OOM_WATCHDOG and nanny_restart is not None:
        evidence["nanny_rss"] = as_json(restart_rss)
    return fc, evidence, peak


def match_event(
    messages: Sequence[Mapping[str, object]], death: PendingDeath
) -> Mapping[str, object] | None:
    """The latest of ``messages`` about the dead worker's pid, if any."""
    for msg in reversed(messages):
        if death.pid is not None and msg.get("pid") == death.pid:
            return msg
    return None


def group_death_events(
    death: PendingDeath,
    record: DeathRecord | None,
    fc: FailureClass,
    evidence: Evidence,
    peak: int | None,
    counters: Counters,
) -> list[Event]:
    """The outcomes of a group whose worker died while running it.

    The worker noted the position of each attempt before starting it (the nanny hands
    the note on in its death record): the attempts before it ran and their results
    died with the worker (``killed``), the one at it gets the death's class, those
    after it never began (requeued, not an attempt, counted in ``counters.requeued``).
    Without the note, every attempt of the group may have run: each gets the death's
    class.
    """
    runs = death.flight.runs
    progress = record.progress if record is not None else None
    began = progress is not None and progress.key == death.flight.key
    if death.unconfirmed and not began:
        # Neither the scheduler nor the worker's note says it began: it was only waiting
        # in the dead worker's queue (not an attempt of its tasks).
        live = [run for run in runs if run.attempt_id not in death.flight.dropped]
        counters.requeued += len(live)
        return [Requeued(run.attempt_id) for run in live]
    index: int | None = None
    if began and progress is not None and len(runs) > 1:
        index = min(progress.index, len(runs) - 1)
    elif len(runs) == 1:
        index = 0
    message = f"the Dask worker running it died ({fc.value})"
    events: list[Event] = []
    for i, run in enumerate(runs):
        if run.attempt_id in death.flight.dropped:
            continue
        if index is None:
            ev = dict(evidence, group_size=len(runs), group_position="unknown")
            events.append(failure_event(run, fc.value, message, ev, peak, death.address))
        elif i < index:
            ev = dict(
                evidence,
                reason="finished, but its result died with its worker before it was sent",
            )
            events.append(
                failure_event(
                    run,
                    FailureClass.KILLED.value,
                    "its result was lost with its Dask worker",
                    ev,
                    None,
                    death.address,
                )
            )
        elif i == index:
            events.append(failure_event(run, fc.value, message, evidence, peak, death.address))
        else:
            counters.requeued += 1
            events.append(Requeued(run.attempt_id))
    return events


def resolve_deaths(
    deaths: list[PendingDeath],
    records: Sequence[Mapping[str, object]],
    restarts: Sequence[Mapping[str, object]],
    workers: Mapping[str, DaskWorker],
    counters: Counters,
) -> tuple[list[PendingDeath], list[Event]]:
    """Classify the deaths whose nanny record came (or that waited long enough): return
    the deaths still waiting, and the events of the attempts of the others."""
    now = time.monotonic()
    events: list[Event] = []
    keep = []
    for death in deaths:
        message = match_event(records, death)
        record = DeathRecord.from_json(message) if message is not None else None
        restart = match_event(restarts, death)
        if record is None and now < death.deadline:
            keep.append(death)
            continue
        worker = workers.get(death.address)
        limit = worker.memory_limit if worker is not None else None
        fc, evidence, peak = classify_dask_death(
            pid=death.pid,
            address=death.address,
            record=record,
            nanny_restart=restart,
            memory_limit=limit,
        )
        evidence.setdefault("limit_bytes", death.limit)
        counters.by_reason[fc.value] = counters.by_reason.get(fc.value, 0) + 1
        events.extend(group_death_events(death, record, fc, evidence, peak, counters))
    return keep, events
