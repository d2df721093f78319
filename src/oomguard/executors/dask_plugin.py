"""What oomguard runs inside a Dask cluster: the task wrapper and two plugins.

* :func:`run_calls` is the function every group of attempts is submitted as (one Dask
  task per group). It runs the group in a child of the worker's
  :class:`~oomguard.executors.dask_isolation.HostPool`, in its own memory cgroup under the
  limit admission gave it (a death there is classified on this host and returned as the
  attempt's outcome); in ``thread`` mode it runs each call item here with the local
  worker's own ``_run_one`` (same classification of ``MemoryError`` and exceptions).
  Values come back pickled (the scheduler stores bytes); then garbage is collected and
  ``malloc_trim(0)`` called so freed memory goes back to the OS, and the worker's resident
  memory after trimming is reported, so the executor can recycle workers that keep growing.
* :class:`WorkerEvidencePlugin` runs in each Dask worker process: it raises the process's
  own ``oom_score_adj`` (raising needs no privilege), so the kernel picks a worker, never
  the nanny or the node's daemons, records the baseline memory after start-up, and starts
  the worker's :class:`~oomguard.executors.dask_isolation.HostPool`.
* :class:`NannyEvidencePlugin` runs in each nanny, the parent that outlives its worker
  process: it samples the worker's ``(pid, start_time)``, resident memory and cgroup
  counters, tails the kernel log where it is readable, and when the worker process dies
  publishes a death record (exit code, last/peak RSS, counters before and after, whether
  the nanny itself terminated it for its memory limit, the kernel's OOM lines for the pid)
  as the scheduler event :data:`DEATH_TOPIC`, which the executor reads to classify the
  death of the attempt that was running there.

This module is imported on the workers: it needs only oomguard and distributed there.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import NannyPlugin, WorkerPlugin

from oomguard import procfs
from oomguard.executors.dask_held import HeldResults, refers
from oomguard.executors.dask_isolation import (
    THREAD,
    ChildUnavailable,
    HostPool,
    large_buffers_from_heap,
)
from oomguard.executors.dask_progress import Progress, read_progress

if TYPE_CHECKING:
    from distributed import Nanny, Scheduler, Worker
    from tornado.ioloop import PeriodicCallback

    from oomguard.kernlog.watch import KernelLogWatch

PLUGIN_NAME = "oomguard-evidence"
#: the Dask worker's log (distributed configures a handler for its own loggers)
log = logging.getLogger("distributed.oomguard")
#: scheduler event topic of the nanny plugin's death records
DEATH_TOPIC = "oomguard-worker-death"
#: scheduler event topic the nanny uses when it restarts a worker over its memory limit
NANNY_MEMORY_TOPIC = "worker-restart-memory"
SAMPLE_INTERVAL_S = 0.1
#: where a Dask worker keeps its pool between two registrations of the worker plugin
POOL_ATTR = "_oomguard_host_pool"
#: after a SIGKILL with no OOM line yet, how long to wait for the kernel's line
KERNEL_LOG_WAIT_S = 2.0
#: the most of a Dask worker's memory its held results may use (docs/ARCHITECTURE.md, "Dask")
HOLD_FRACTION = 0.25


def _rss(pid: int | str = "self") -> int | None:
    return procfs.rss_bytes(pid)


def _counters(pid: int) -> dict[str, Any] | None:
    """The memory cgroup counters of ``pid``'s cgroup, where they can be read."""
    from oomguard.cgroups.locate import locate_memory_cgroup

    try:
        version, directory, _, _ = locate_memory_cgroup(pid=pid)
    except (OSError, ValueError):
        return None
    if version is None or directory is None:
        return None
    return _counters_at(str(directory), version)


def _counters_at(path: str, version: int) -> dict[str, Any] | None:
    from pathlib import Path

    from oomguard.cgroups.cgroup import MemoryCgroup

    try:
        counters = MemoryCgroup(Path(path), version).counters().to_json()
    except (OSError, ValueError):
        return None
    return dict(counters, path=path, version=version)


def _trim() -> None:
    from oomguard.worker.hygiene import malloc_trim

    gc.collect()
    malloc_trim()


#: started keys the Dask scheduler remembers (oldest forgotten first)
STARTED_KEEP = 100_000


def _first_start(dask_scheduler: Scheduler, key: str) -> bool:
    """On the Dask scheduler: True the first time ``key`` starts, False ever after."""
    from collections import OrderedDict

    # Kept on the scheduler object itself, so it lives exactly as long as the scheduler.
    state = vars(dask_scheduler)
    started: OrderedDict[str, bool] | None = state.get("_oomguard_started")
    if started is None:
        started = state["_oomguard_started"] = OrderedDict()
    if key in started:
        return False
    started[key] = True
    while len(started) > STARTED_KEEP:
        started.popitem(last=False)
    return True


def was_started(dask_scheduler: Scheduler, key: str) -> bool:
    """On the Dask scheduler: whether ``key`` ever started running on a worker."""
    return key in (getattr(dask_scheduler, "_oomguard_started", None) or {})


def _already_started() -> bool:
    """Whether this Dask task's key ran before: Dask recomputes a finished key whose worker
    died before oomguard gathered it; its attempts must not run twice behind its back.

    One round trip to the Dask scheduler per Dask task, which is a whole group of attempts.
    """
    try:
        from distributed import get_client, get_worker

        key = str(get_worker().get_current_task())
        first: bool = get_client().run_on_scheduler(_first_start, key=key)
        return not first
    except (ImportError, ValueError):
        return False  # not on a Dask worker (called directly): nothing to guard


def _run_item(item: dict[str, Any]) -> dict[str, Any]:

    from oomguard.worker.child import _run_one, maxrss_bytes, pickle_result, process_peak

    rss_before = _rss() or 0
    maxrss_before = maxrss_bytes()
    t0 = time.time()
    # A Dask worker imports task modules from the directory it was started in (after
    # everything installed), as a local worker does from its caller's.
    ok, value, fc, message, tb = _run_one(item, os.getcwd())
    elapsed = time.time() - t0
    peak = process_peak(maxrss_before, rss_before)
    ok, payload, fc, message = pickle_result(ok, value, fc, message)
    del value
    evidence: dict[str, Any] = {"elapsed_s": round(elapsed, 6)}
    if tb:
        evidence["traceback"] = tb
    return {
        "attempt_id": item["attempt_id"],
        "ok": ok,
        "payload": payload,
        "failure_class": fc,
        "message": message,
        "evidence": evidence,
        "peak": peak,
    }


def run_calls(items: list[dict[str, Any]], limit: int | None = None) -> dict[str, Any]:
    """Run a group of call items one after another on this Dask worker.

    Where the worker plugin started a :class:`~oomguard.executors.dask_isolation.HostPool`
    the group runs in one of its children, in its own memory cgroup under ``limit`` (the
    limit admission gave it; None: the worker's memory limit), and a death there comes
    back as the attempt's classified outcome. In ``thread`` mode the items run here.

    Each item keeps its own outcome; like the local pool's batches, garbage is collected
    and malloc trimmed once after the group, and the worker's RSS reported then. Before
    each item the worker notes its position (:func:`read_progress`), so when the worker
    dies mid-group the executor can tell the attempts that ran from those that never began.
    Results asked to be held are kept here for their aggregation (:mod:`.dask_held`).
    """
    address, baseline = _worker_identity()
    if _already_started():
        return {"duplicate": True, "worker": address, "pid": os.getpid()}
    plugin = _plugin()
    held: HeldResults | None = getattr(plugin, "held", None)
    if not (held.resolve(items) if held is not None else not any(map(refers, items))):
        # A result an aggregation refers to is no longer held here: nothing runs.
        return {"missing": True, "worker": address, "pid": os.getpid()}
    key, progress = _current_key(), getattr(plugin, "progress", None)

    def note(index: int) -> None:
        if progress is not None and key is not None:
            progress.note(key, index)

    pool: HostPool | None = getattr(plugin, "pool", None)
    recycles_before = dict(pool.recycles) if pool is not None else {}
    outcomes = []
    if pool is not None and pool.isolated:
        # The child collects and trims after its group; this process ran no task.
        note(0)
        if held is not None:  # held results never use memory an attempt was given
            held.fit(pool.room(HOLD_FRACTION, limit or pool.memory_limit or 0))
        try:
            outcomes = pool.run(items, limit, note)
        except ChildUnavailable as err:
            # Nothing ran: this group runs here, in the worker's thread, as in thread mode.
            log.warning("oomguard: %s; running it in the Dask worker's thread", err)
            pool = None
    if pool is None or not pool.isolated:
        for index, item in enumerate(items):
            note(index)
            outcomes.append(_run_item(item))
        # Against fragmentation: give what the tasks freed back before the next group.
        _trim()
    kept = []
    if held is not None and pool is not None and pool.isolated:
        kept = held.keep(items, outcomes, pool.room(HOLD_FRACTION))
    recycled = {}
    if pool is not None:
        recycled = {
            reason: n - recycles_before.get(reason, 0)
            for reason, n in pool.recycles.items()
            if n > recycles_before.get(reason, 0)
        }
    return {
        "outcomes": outcomes,
        "worker": address,
        "pid": os.getpid(),
        "rss_after": _rss(),
        "baseline": baseline,
        "isolation": pool.mode if pool is not None else THREAD,
        "recycled": recycled,
        "held": kept,
        "dropped": held.take_dropped() if held is not None else [],
    }


def _plugin() -> Any:
    """This Dask worker's plugin (None: not on a Dask worker, or none registered)."""
    try:
        from distributed import get_worker

        return get_worker().plugins.get(PLUGIN_NAME)
    except (ImportError, ValueError):
        return None


def host_isolation(dask_worker: Worker) -> dict[str, Any]:
    """On a Dask worker (``client.run``): how its attempts are isolated."""
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    pool: HostPool | None = getattr(plugin, "pool", None)
    if pool is not None:
        return pool.describe()
    # oomguard has not run here yet: what its pool would do (a probe cgroup made, removed).
    from oomguard.cgroups.detect import detect_isolation

    try:
        plan = detect_isolation("auto")
    except Exception as err:
        return {"mode": THREAD, "reason": f"not started; {type(err).__name__}: {err}"}
    return {"mode": plan.mode, "reason": f"not started yet; {plan.reason}", "pid": os.getpid()}


def kill_on_host(
    dask_worker: Worker, attempt_id: int, reason: str, evidence: dict[str, Any]
) -> str:
    """On a Dask worker (``client.run``): kill the child running ``attempt_id``
    (:meth:`~oomguard.executors.dask_isolation.HostPool.kill`)."""
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    pool: HostPool | None = getattr(plugin, "pool", None)
    if pool is None:
        return THREAD
    return pool.kill(attempt_id, reason, evidence)


def _current_key() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().get_current_task())
    except (ImportError, ValueError):
        return None


def _worker_identity() -> tuple[str | None, int | None]:
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None, None
    plugin = worker.plugins.get(PLUGIN_NAME)
    return str(worker.address), getattr(plugin, "baseline", None)


class WorkerEvidencePlugin(WorkerPlugin):
    """Dask worker plugin: raises ``oom_score_adj``, records the worker's baseline RSS and
    starts the pool that runs each attempt in its own memory cgroup on this host
    (:class:`~oomguard.executors.dask_isolation.HostPool`, mode ``isolation``)."""

    idempotent = False
    name = PLUGIN_NAME

    def __init__(
        self,
        oom_score_adj: int = 800,
        isolation: str = "auto",
        recycle_growth_fraction: float = 0.25,
        max_tasks: int = 0,
        kernel_log: str = "/dev/kmsg",
        kernel_log_wait: float = 2.0,
    ) -> None:
        self.oom_score_adj = oom_score_adj
        self.isolation = isolation
        self.recycle_growth_fraction = recycle_growth_fraction
        self.max_tasks = max_tasks
        self.kernel_log = kernel_log
        self.kernel_log_wait = kernel_log_wait
        self.baseline: int | None = None
        self.oom_score_adj_error: str | None = None
        self.progress: Progress | None = None
        self.pool: HostPool | None = None
        #: replicates' results held here for their aggregation (:mod:`.dask_held`)
        self.held: HeldResults | None = None

    def setup(self, worker: Worker) -> None:
        try:
            with open("/proc/self/oom_score_adj") as fh:
                current = int(fh.read().strip())
            # Raising needs no privilege; lowering does, and is never what we want here.
            if self.oom_score_adj > current:
                with open("/proc/self/oom_score_adj", "w") as fh:
                    fh.write(str(self.oom_score_adj))
        except (OSError, ValueError) as err:
            self.oom_score_adj_error = str(err)
        import oomguard.jobs.task  # noqa: F401  (part of the baseline, as in the local pool)

        self.progress = Progress()
        self.held = HeldResults()
        self._start_pool(worker)
        if self.pool is not None and self.pool.isolated:
            large_buffers_from_heap()
        _trim()
        self.baseline = _rss()

    def _start_pool(self, worker: Worker) -> None:
        mm = getattr(worker, "memory_manager", None)
        limit = getattr(mm, "memory_limit", None)
        pool = HostPool(
            asked=self.isolation,
            oom_score_adj=self.oom_score_adj,
            recycle_growth_fraction=self.recycle_growth_fraction,
            max_tasks=self.max_tasks,
            memory_limit=int(limit) if limit else None,
            kernel_log=self.kernel_log,
            kernel_log_wait=self.kernel_log_wait,
            # A Dask worker imports task modules from the directory it was started in
            # (after everything installed), as a local worker does from its caller's.
            task_dir=os.getcwd(),
        )
        # Every Runner registers the plugin again (the old one is torn down first): the
        # pool, its children and the attempts they run are kept when nothing changed, so
        # a second Runner on the cluster never kills the first one's attempts.
        kept: HostPool | None = vars(worker).pop(POOL_ATTR, None)
        if kept is not None and kept.settings == pool.settings:
            self.pool = kept
            return
        if kept is not None:
            kept.close()
        self.pool = pool
        pool.start()

    def teardown(self, worker: Worker) -> None:
        if self.pool is not None:
            status = getattr(getattr(worker, "status", None), "name", "")
            if status in ("running", "paused", "closing_gracefully"):
                vars(worker)[POOL_ATTR] = self.pool  # replaced, not closing: for the next
            else:
                self.pool.close()
        if self.progress is not None:
            self.progress.close()
        if self.held is not None:
            self.held.clear()

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        return None


class NannyEvidencePlugin(NannyPlugin):
    """Dask nanny plugin: watches the worker process and reports how it died."""

    idempotent = False
    name = PLUGIN_NAME

    def __init__(self, kernel_log: str = "/dev/kmsg") -> None:
        self.kernel_log = kernel_log
        self._nanny: Nanny | None = None
        self._kmsg: KernelLogWatch | None = None
        self._callback: PeriodicCallback | None = None
        self._proc: Any = None
        self._current: dict[str, Any] = {}
        self._pending: list[tuple[float, dict[str, Any]]] = []

    def setup(self, nanny: Nanny) -> None:
        from tornado.ioloop import PeriodicCallback

        from oomguard.kernlog.watch import KernelLogWatch

        self._nanny = nanny
        self._kmsg = KernelLogWatch(self.kernel_log)
        self._kmsg.start()
        self._callback = PeriodicCallback(self._guarded(self.sample), SAMPLE_INTERVAL_S * 1000)
        self._callback.start()

    def teardown(self, nanny: Nanny) -> None:
        if self._callback is not None:
            self._callback.stop()
        if self._kmsg is not None:
            self._kmsg.stop()

    def _guarded(self, fn: Callable[[], None]) -> Callable[[], None]:
        def call() -> None:
            try:
                fn()
            except Exception:  # evidence gathering must never take the nanny down
                logging.getLogger("oomguard.dask").exception("oomguard nanny plugin")

        return call

    def sample(self) -> None:
        """One tick: notice a dead worker process, sample the live one, publish deaths."""
        nanny = self._nanny
        wp = getattr(nanny, "process", None)
        proc = getattr(wp, "process", None)
        old = self._proc
        if old is not None and not old.is_alive():
            self._died(old)
            self._proc = None
        if proc is not None and proc is not self._proc and proc.is_alive() and proc.pid:
            from oomguard.procfs import process_start_time

            self._proc = proc
            self._current = {
                "pid": proc.pid,
                "start_time": process_start_time(proc.pid),
                "worker": getattr(nanny, "worker_address", None),
                "counters_before": _counters(proc.pid),
                "rss": None,
                "peak_rss": 0,
            }
        if self._proc is not None and self._proc.is_alive():
            rss = _rss(self._proc.pid)
            if rss:  # 0: a process being torn down
                self._current["rss"] = rss
                self._current["peak_rss"] = max(self._current["peak_rss"], rss)
        self._publish()

    def _died(self, proc: Any) -> None:
        record = dict(self._current)
        pid = record.get("pid", proc.pid)
        record["exitcode"] = proc.exitcode
        before = record.get("counters_before")
        # Read at once: the kill was counted before the signal was sent.
        record["counters_after"] = (
            _counters_at(before["path"], before["version"]) if before else None
        )
        mm = getattr(self._nanny, "memory_manager", None)
        record["memory_limit"] = getattr(mm, "memory_limit", None)
        record["nanny_terminated"] = getattr(mm, "_last_terminated_pid", None) == pid
        record["kernel_log"] = self._kmsg.unavailable if self._kmsg is not None else None
        record["progress"] = read_progress(pid) if pid else None
        self._pending.append((time.monotonic() + KERNEL_LOG_WAIT_S, record))

    def _publish(self) -> None:
        keep = []
        for deadline, record in self._pending:
            event = self._kmsg.find(pid=record.get("pid")) if self._kmsg is not None else None
            if event is not None:
                record["kernel"] = event.to_json()
                record["kernel_lines"] = list(event.lines)
            elif (
                record.get("exitcode") == -9
                and not record["nanny_terminated"]
                and record["kernel_log"] is None
                and time.monotonic() < deadline
            ):
                keep.append((deadline, record))  # the "Killed process" line can lag
                continue
            if self._nanny is not None:
                self._nanny.log_event(DEATH_TOPIC, record)
        self._pending = keep
