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
from dataclasses import dataclass
from typing import Any

from oomguard.diagnosis.classify import describe_status
from oomguard.executors.dask.flights import Counters, Flight, failure_event
from oomguard.executors.events import Event, Requeued
from oomguard.jobs.model import FailureClass

#: a worker is "near its memory limit" at death above this fraction of it
NEAR_LIMIT = 0.9
#: how long to wait for the nanny's death record after a worker died
EVIDENCE_WAIT_S = 1.5


@dataclass
class PendingDeath:
    flight: Flight
    address: str
    pid: int | None
    deadline: float
    limit: int


def classify_dask_death(
    *,
    pid: int | None,
    address: str,
    record: dict[str, Any] | None,
    nanny_restart: dict[str, Any] | None,
    memory_limit: int | None,
) -> tuple[FailureClass, dict[str, Any], int | None]:
    """The class of a Dask worker's death, the evidence that decided it, and its peak.

    ``record`` is the nanny plugin's death record, ``nanny_restart`` the nanny's own
    ``worker-restart-memory`` event for the pid; either may be missing (no nanny, plugin
    not registered, evidence late). Kernel evidence comes first: a kernel OOM kill names
    the pid in its ``Killed process`` line (``oom_system`` when global; when a memory
    cgroup's limit, ``oom_cgroup`` if it is the worker's own cgroup and ``oom_ancestor`` if
    the line's ``oom_memcg`` is not its ``task_memcg``), or the worker's cgroup ``oom_kill``
    counter rose while it died by SIGKILL (``oom_ancestor`` where v2's ``oom`` did not rise
    with it). These are the rules of :func:`~oomguard.diagnosis.classify.classify_death`
    for local workers. Then the nanny's memory-limit restart, or RSS near the limit at
    death: ``oom_watchdog``. Otherwise ``killed`` (SIGKILL or unknown) or ``crashed``.
    """
    rec = record or {}
    evidence: dict[str, Any] = {"executor": "dask", "worker": address, "pid": pid}
    exitcode = rec.get("exitcode")
    if exitcode is not None:
        # multiprocessing's exitcode: -N for "killed by signal N", as a wait status.
        status = (-exitcode) & 0x7F if exitcode < 0 else (exitcode & 0xFF) << 8
        evidence.update(describe_status(status))
        evidence["exitcode"] = exitcode
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
        if rec.get(key) is not None:
            evidence["pid_start_time" if key == "start_time" else key] = rec[key]
    if record is None:
        evidence["nanny_record"] = "none received: no nanny, or the plugin is not registered"
    limit = rec.get("memory_limit") or memory_limit
    if limit:
        evidence["worker_memory_limit"] = limit
    peak = rec.get("peak_rss") or (nanny_restart or {}).get("rss") or None
    sigkill = exitcode == -9
    kernel = rec.get("kernel")
    if kernel:
        if kernel.get("oom_type") == "global" or kernel.get("constraint") == "CONSTRAINT_NONE":
            return FailureClass.OOM_SYSTEM, evidence, peak
        if _parent_limit(kernel):
            return FailureClass.OOM_ANCESTOR, evidence, peak
        return FailureClass.OOM_CGROUP, evidence, peak
    before, after = rec.get("counters_before") or {}, rec.get("counters_after") or {}
    if sigkill and _rose(before, after, "oom_kill"):
        # v2's memory.events is hierarchical: oom_kill also rises when a parent's limit
        # was hit, "oom" only for limits at or below the worker's cgroup. v1 has no "oom".
        v1 = before.get("oom") is None or after.get("oom") is None
        if v1 or _rose(before, after, "oom"):
            return FailureClass.OOM_CGROUP, evidence, peak
        return FailureClass.OOM_ANCESTOR, evidence, peak
    if nanny_restart is not None or rec.get("nanny_terminated"):
        evidence["killed_by"] = "dask nanny (worker memory limit)"
        if nanny_restart is not None:
            evidence["nanny_rss"] = nanny_restart.get("rss")
        return FailureClass.OOM_WATCHDOG, evidence, peak
    last = rec.get("rss")
    if limit and last and last >= NEAR_LIMIT * limit:
        evidence["killed_by"] = "near the worker memory limit at death"
        return FailureClass.OOM_WATCHDOG, evidence, peak
    if exitcode is None or sigkill:
        return FailureClass.KILLED, evidence, peak
    return FailureClass.CRASHED, evidence, peak


def _parent_limit(kernel: dict[str, Any]) -> bool:
    """Whether a kernel OOM report names a limit hit in another memory cgroup than the
    victim's own (a pod's or a container's): ``oom_memcg`` is not ``task_memcg``."""
    oom_memcg, task_memcg = kernel.get("oom_memcg"), kernel.get("task_memcg")
    if not oom_memcg or not task_memcg:
        return False
    return str(oom_memcg).rstrip("/") != str(task_memcg).rstrip("/")


def _rose(before: dict[str, Any], after: dict[str, Any], counter: str) -> bool:
    return (after.get(counter) or 0) > (before.get(counter) or 0)


def match_event(messages: list[dict[str, Any]], death: PendingDeath) -> dict[str, Any] | None:
    """The latest of ``messages`` about the dead worker's pid (a copy), if any."""
    for msg in reversed(messages):
        if death.pid is not None and msg.get("pid") == death.pid:
            return dict(msg)
    return None


def group_death_events(
    death: PendingDeath,
    record: dict[str, Any] | None,
    fc: FailureClass,
    evidence: dict[str, Any],
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
    progress = (record or {}).get("progress") or {}
    index: int | None = None
    if progress.get("key") == death.flight.key and len(runs) > 1:
        index = min(int(progress.get("index", 0)), len(runs) - 1)
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
    records: list[dict[str, Any]],
    restarts: list[dict[str, Any]],
    workers: dict[str, dict[str, Any]],
    counters: Counters,
) -> tuple[list[PendingDeath], list[Event]]:
    """Classify the deaths whose nanny record came (or that waited long enough): return
    the deaths still waiting, and the events of the attempts of the others."""
    now = time.monotonic()
    events: list[Event] = []
    keep = []
    for death in deaths:
        record = match_event(records, death)
        restart = match_event(restarts, death)
        if record is None and now < death.deadline:
            keep.append(death)
            continue
        limit = workers.get(death.address, {}).get("memory_limit")
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
