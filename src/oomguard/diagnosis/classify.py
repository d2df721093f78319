"""Classify a worker's death with the evidence of the kernel and the cgroup: the one
table of death rules, for a local worker (:func:`classify_death`) and for a Dask worker
process (:func:`classify_dask_death`), both reading the same kernel and counter rules.

The rules are the "Failure classes" table of ``docs/ARCHITECTURE.md``. Counters are read
when ``wait4`` returns and before the worker's cgroup is removed: the kernel counts the
kill before it sends the signal, so by then they are final.
"""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from oomguard.cgroups.cgroup import classify_counters
from oomguard.jobs.model import FailureClass

if TYPE_CHECKING:
    from oomguard.cgroups.cgroup import CgroupCounters, MemoryCgroup
    from oomguard.kernlog.event import OomEvent
    from oomguard.kernlog.watch import KernelLogWatch


class DeadWorker(Protocol):
    """The worker whose death is classified (the pool's ``Worker``)."""

    @property
    def name(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def start_time(self) -> float: ...
    @property
    def cgroup(self) -> MemoryCgroup | None: ...
    @property
    def killed_by(self) -> tuple[str, Mapping[str, object]] | None: ...
    @property
    def counters_before(self) -> CgroupCounters | None: ...
    @property
    def peak_sample(self) -> int: ...


class Death(Protocol):
    """A worker's death as the pool saw it with ``os.wait4`` (the pool's ``Died``)."""

    @property
    def worker(self) -> DeadWorker: ...
    @property
    def status(self) -> int: ...
    @property
    def rusage(self) -> resource.struct_rusage | None: ...


def describe_status(status: int) -> dict[str, object]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"SIG{sig}"
        return {"signal": sig, "signal_name": name, "exit_code": None, "core": os.WCOREDUMP(status)}
    if os.WIFEXITED(status):
        return {"signal": None, "signal_name": None, "exit_code": os.WEXITSTATUS(status)}
    return {"signal": None, "signal_name": None, "exit_code": None}


def classify_death(
    status: int,
    *,
    killed_by: tuple[str, Mapping[str, object]] | None,
    counters_before: CgroupCounters | None,
    counters_after: CgroupCounters | None,
    kernel_event: OomEvent | None,
) -> tuple[FailureClass, dict[str, object]]:
    """The class of a worker's death and the evidence that decided it."""
    evidence = describe_status(status)
    if counters_before is not None:
        evidence["cgroup_before"] = counters_before.to_json()
    if counters_after is not None:
        evidence["cgroup_after"] = counters_after.to_json()
    if kernel_event is not None:
        evidence["kernel"] = kernel_event.to_json()
        evidence["kernel_lines"] = list(kernel_event.lines)
    sigkill = evidence["signal"] == signal.SIGKILL
    if killed_by is not None:
        reason, extra = killed_by
        evidence["killed_by_oomguard"] = reason
        evidence.update(extra)
        if reason == "timeout":
            return FailureClass.TIMEOUT, evidence
        if reason == "watchdog":
            return FailureClass.OOM_WATCHDOG, evidence
        return FailureClass.KILLED, evidence
    if kernel_event is not None and sigkill and _global(kernel_event):
        # The kernel counts every OOM kill in the victim's own memcg (v1 oom_kill; v2
        # oom_kill without oom), a global one too: its report says it was the machine's.
        return FailureClass.OOM_SYSTEM, evidence
    if counters_before is not None and counters_after is not None:
        verdict = classify_counters(counters_before, counters_after)
        if verdict == "oom_cgroup" and counters_after.oom is None and ancestor_limit(kernel_event):
            # v1 counts oom_kill on the victim's own cgroup whichever limit was hit; the
            # kernel's line says whose limit it was (v2's "oom" counter says it already).
            verdict = "oom_ancestor"
        if verdict == "oom_cgroup":
            return FailureClass.OOM_CGROUP, evidence
        if verdict == "oom_ancestor":
            return FailureClass.OOM_ANCESTOR, evidence
    if kernel_event is not None and sigkill and kernel_event.oom_type == "memcg":
        # Killed by a memcg limit that is not the worker's own: a parent's (pod, container).
        return FailureClass.OOM_ANCESTOR, evidence
    if sigkill:
        return FailureClass.KILLED, evidence
    return FailureClass.CRASHED, evidence


def _global(event: OomEvent) -> bool:
    """Whether a kernel report is of the machine running out (not a memcg limit)."""
    return event.oom_type == "global" or event.constraint == "CONSTRAINT_NONE"


def ancestor_limit(event: OomEvent | None) -> bool:
    """Whether a kernel event names a limit hit in another cgroup than the victim's."""
    if event is None or not event.oom_memcg or not event.task_memcg:
        return False
    return bool(event.oom_memcg.rstrip("/") != event.task_memcg.rstrip("/"))


#: kills oomguard makes itself: no kernel OOM report follows them
OWN_KILLS = ("timeout", "cancel", "watchdog", "stop")


def explain_death(
    died: Death,
    counters_after: CgroupCounters | None,
    kmsg: KernelLogWatch | None,
    *,
    waited_enough: bool,
) -> tuple[FailureClass, dict[str, object], int | None] | None:
    """Class, evidence and peak memory of a worker's death, or None to wait for the kernel.

    ``died`` has ``.worker`` (``pid``, ``start_time``, ``name``, ``cgroup``, ``killed_by``,
    ``counters_before``, ``peak_sample``), ``.status`` and ``.rusage``; ``kmsg`` is the
    :class:`~oomguard.kernlog.watch.KernelLogWatch`. A SIGKILL that oomguard did not send may be
    the OOM killer's, whose ``Killed process`` line can lag the signal: until
    ``waited_enough``, a death with no kernel report yet returns None.
    """
    worker = died.worker
    event = None
    readable = kmsg is not None and kmsg.unavailable is None
    if kmsg is not None and readable:
        cgroup = str(worker.cgroup.path) if worker.cgroup is not None else None
        event = kmsg.find(pid=worker.pid, cgroup=cgroup)
    sigkill = os.WIFSIGNALED(died.status) and os.WTERMSIG(died.status) == signal.SIGKILL
    ours = worker.killed_by is not None and worker.killed_by[0] in OWN_KILLS
    if event is None and sigkill and not ours and readable and not waited_enough:
        return None
    fc, evidence = classify_death(
        died.status,
        killed_by=worker.killed_by,
        counters_before=worker.counters_before,
        counters_after=counters_after,
        kernel_event=event,
    )
    evidence["worker"] = worker.name
    evidence["pid"] = worker.pid
    evidence["pid_start_time"] = worker.start_time
    if worker.cgroup is not None:
        evidence["cgroup"] = str(worker.cgroup.path)
    if event is None and sigkill and not ours and kmsg is not None:
        evidence["kernel_log"] = kmsg.unavailable or "no OOM report for this pid"
    if died.rusage is not None:
        evidence["maxrss_bytes"] = died.rusage.ru_maxrss * 1024
    peak = None
    if counters_after is not None and counters_after.peak_bytes is not None:
        peak = counters_after.peak_bytes
    elif worker.peak_sample:
        peak = worker.peak_sample
    return fc, evidence, peak


# ------------------------------------------------------------------ a Dask worker's death

#: a Dask worker is "near its memory limit" at death above this fraction of it
NEAR_LIMIT = 0.9


def classify_dask_death(
    *,
    exitcode: int | None,
    kernel_event: OomEvent | None,
    counters_before: CgroupCounters | None,
    counters_after: CgroupCounters | None,
    nanny_terminated: bool,
    last_rss: int | None,
    memory_limit: int | None,
) -> tuple[FailureClass, str | None]:
    """The class of a Dask worker process's death from its nanny's record, and who killed
    it where that decided (``killed_by``); ``exitcode`` is multiprocessing's (``-N``: killed
    by signal N; None: unknown).

    Kernel evidence first, by the rules of :func:`classify_death`: a kernel OOM report for
    the pid is ``oom_system`` when global, ``oom_ancestor`` when the limit hit was another
    memcg's than the worker's (:func:`ancestor_limit`), else ``oom_cgroup``; a SIGKILL while
    the worker's cgroup counted an OOM kill is what ``classify_counters`` says. Then the
    nanny's memory-limit restart (``nanny_terminated``), or RSS near the limit at death:
    ``oom_watchdog``. Otherwise ``killed`` (SIGKILL or unknown) or ``crashed``.
    """
    sigkill = exitcode == -signal.SIGKILL
    if kernel_event is not None:
        if _global(kernel_event):
            return FailureClass.OOM_SYSTEM, None
        if ancestor_limit(kernel_event):
            return FailureClass.OOM_ANCESTOR, None
        return FailureClass.OOM_CGROUP, None
    if sigkill and counters_before is not None and counters_after is not None:
        verdict = classify_counters(counters_before, counters_after)
        if verdict is not None:
            return FailureClass(verdict), None
    if nanny_terminated:
        return FailureClass.OOM_WATCHDOG, "dask nanny (worker memory limit)"
    if memory_limit and last_rss and last_rss >= NEAR_LIMIT * memory_limit:
        return FailureClass.OOM_WATCHDOG, "near the worker memory limit at death"
    if exitcode is None or sigkill:
        return FailureClass.KILLED, None
    return FailureClass.CRASHED, None
