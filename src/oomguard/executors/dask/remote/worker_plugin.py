"""The worker plugin: what oomguard sets up in each Dask worker process.

:class:`WorkerEvidencePlugin` raises the process's own ``oom_score_adj`` (raising needs no
privilege), so the kernel picks a worker, never the nanny or the node's daemons, records
the baseline memory after start-up, and starts the worker's
:class:`~oomguard.executors.dask.remote.host_pool.HostPool`. :func:`host_isolation` and
:func:`kill_on_host` are what the client asks of a worker through it (``client.run``).
"""

from __future__ import annotations

import os

from distributed import Worker
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.protocol.serialize import Serialize, to_serialize

import oomguard.jobs.task  # noqa: F401  (part of the baseline, as in the local pool)
from oomguard import procfs
from oomguard.cgroups.detect import detect_isolation
from oomguard.executors.dask.remote import PLUGIN_NAME, TAKE_HELD_OP, THREAD
from oomguard.executors.dask.remote.answers import Evidence
from oomguard.executors.dask.remote.heap import large_buffers_from_heap, trim
from oomguard.executors.dask.remote.held import HeldResults
from oomguard.executors.dask.remote.host_pool import HostPool
from oomguard.executors.dask.remote.progress import Progress

#: where a Dask worker keeps its pool between two registrations of the worker plugin
POOL_ATTR = "_oomguard_host_pool"


class WorkerEvidencePlugin(WorkerPlugin):
    """Dask worker plugin: raises ``oom_score_adj``, records the worker's baseline RSS and
    starts the pool that runs each attempt in its own memory cgroup on this host
    (:class:`~oomguard.executors.dask.remote.host_pool.HostPool`, mode ``isolation``)."""

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
        #: replicates' results held here for their aggregation (:mod:`.held`)
        self.held: HeldResults | None = None

    def setup(self, worker: Worker) -> None:
        try:
            procfs.raise_oom_score_adj(self.oom_score_adj)
        except (OSError, ValueError) as err:
            self.oom_score_adj_error = str(err)
        self.progress = Progress()
        self.held = HeldResults()
        # Another worker running an aggregation takes the results held here straight
        # from this one, as Dask moves a task's dependencies (remote/tasks.py).
        worker.handlers[TAKE_HELD_OP] = self.take_held
        self._start_pool(worker)
        if self.pool is not None and self.pool.isolated:
            large_buffers_from_heap()
        trim()
        self.baseline = procfs.rss_bytes()

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

    def take_held(self, attempt_ids: list[int]) -> list[tuple[int, Serialize]]:
        """The worker handler :data:`TAKE_HELD_OP`: those of ``attempt_ids`` held here,
        taken, each as a frame of its own (not copied into the message)."""
        got = self.held.take(attempt_ids) if self.held is not None else {}
        return [(a, to_serialize(payload)) for a, payload in got.items()]  # type: ignore[no-untyped-call]

    def teardown(self, worker: Worker) -> None:
        if worker.handlers.get(TAKE_HELD_OP) == self.take_held:
            del worker.handlers[TAKE_HELD_OP]
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

    def transition(self, key: object, start: str, finish: str, **kwargs: object) -> None:
        return None


def plugin_of(dask_worker: Worker) -> WorkerEvidencePlugin | None:
    """``dask_worker``'s oomguard plugin (None: none registered there)."""
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    return plugin if isinstance(plugin, WorkerEvidencePlugin) else None


def host_isolation(dask_worker: Worker) -> dict[str, object]:
    """On a Dask worker (``client.run``): how its attempts are isolated."""
    plugin = plugin_of(dask_worker)
    pool = plugin.pool if plugin is not None else None
    if pool is not None:
        return pool.describe()
    # oomguard has not run here yet: what its pool would do (a probe cgroup made, removed).
    try:
        plan = detect_isolation("auto")
    except Exception as err:
        return {"mode": THREAD, "reason": f"not started; {type(err).__name__}: {err}"}
    return {"mode": plan.mode, "reason": f"not started yet; {plan.reason}", "pid": os.getpid()}


def kill_on_host(dask_worker: Worker, attempt_id: int, reason: str, evidence: Evidence) -> str:
    """On a Dask worker (``client.run``): kill the child running ``attempt_id``
    (:meth:`~oomguard.executors.dask.remote.host_pool.HostPool.kill`)."""
    plugin = plugin_of(dask_worker)
    pool = plugin.pool if plugin is not None else None
    if pool is None:
        return THREAD
    return pool.kill(attempt_id, reason, evidence)
