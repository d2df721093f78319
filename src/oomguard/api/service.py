"""The server's state: settings, the runner, and the threads that keep backpressure current.

A :class:`ServerState` owns the :class:`~oomguard.runner.Runner`, one store
connection per thread, the pending-task counter (polled from the store) and the scheduler's
memory watch (sampled RSS, which shrinks the scheduler's window under pressure). It is also
the :class:`~oomguard.api.metrics.MetricsSource` of ``/metrics``.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar, cast

import psutil

from oomguard.api.backpressure import Backpressure, MemoryPressure
from oomguard.api.metrics import ServerMetrics
from oomguard.api.retention import Retention
from oomguard.api.tenancy import Tenancy
from oomguard.config import RunnerConfig, load_config
from oomguard.errors import ConfigError, StoreError
from oomguard.jobs.command import Command, label
from oomguard.runner import Runner
from oomguard.store.per_thread import ThreadStores

GIB = 1024**3


def container_memory_limit() -> int | None:
    """The memory limit of the cgroup this process runs in (None: unlimited/unknown)."""
    from oomguard.cgroups.locate import locate_memory_cgroup, memory_limit_of

    version, directory, top, _ = locate_memory_cgroup()
    if version is None or directory is None or top is None:
        return None
    return memory_limit_of(directory, top, version)


def resolve_scheduler_memory_limit(configured: int | None, container: int | None) -> int:
    """The scheduler's own limit: configured, or half the container's, or 1 GiB."""
    if configured is not None:
        if configured <= 0:
            raise ConfigError("--scheduler-memory-limit must be larger than 0")
        if container is not None and configured > container:
            raise ConfigError(
                f"--scheduler-memory-limit {configured} bytes is above the container's "
                f"memory limit ({container} bytes)"
            )
        return configured
    return container // 2 if container is not None else GIB


T = TypeVar("T")


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``oomguard serve`` configures (built by the CLI, passed down)."""

    store: str
    workers: int | None = None
    task_modules: tuple[str, ...] = ("oomguard.examples",)
    #: the one bearer token (the admin of every namespace); None: see ``tenancy``
    token: str | None = None
    #: tokens mapped to roles and namespaces (``--tokens-file``); None: ``token`` alone
    tenancy: Tenancy | None = None
    max_pending_tasks: int | None = 100_000
    namespace_quotas: dict[str, int] = field(default_factory=dict)
    #: namespaces without a quota that may have pending tasks at once (None: any number)
    max_namespaces: int | None = 100
    scheduler_memory_limit: int = GIB
    heap_profiling: bool = False
    #: arguments of one task (JSON) larger than this are refused
    max_task_bytes: int = 1024 * 1024
    #: request bodies larger than this are refused before they are read
    max_request_bytes: int = 8 * 1024 * 1024
    #: JSON values (arguments included) a submission's body may hold: refused unparsed
    max_request_values: int = 500_000
    #: about the most bytes a task listing answers (then ``truncated``)
    max_response_bytes: int = 4 * 1024 * 1024
    #: host names a request's Host header may name; None: any (see api.guard.Guard)
    allowed_hosts: tuple[str, ...] | None = None
    default_batch_size: int = 5000
    pending_poll_interval: float = 0.5
    rss_sample_interval: float = 0.2
    runner_options: dict[str, object] = field(default_factory=dict)
    #: programs submissions may run, by name (``--commands FILE``)
    commands: dict[str, Command] = field(default_factory=dict)
    #: the most retries a submission may ask for
    max_retries: int = 10
    #: the config file's settings (``serve --config``), under the options above
    base_config: RunnerConfig | None = None

    def access(self) -> Tenancy:
        """Who may ask: the tokens file's grants, else the one token, else open."""
        return self.tenancy if self.tenancy is not None else Tenancy.single(self.token)


class ServerState:
    """The runner, the backpressure state and the threads that keep it current."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        # Workers of a server run in "/" and import only what is installed (or on
        # PYTHONPATH), never from the directory the server was started in.
        options = {"task_dir": "", **settings.runner_options}
        base = settings.base_config or load_config(env={})
        self.runner = Runner(
            config=base.replace(store=settings.store, workers=settings.workers, **options)
        )
        self.stores = ThreadStores(self.runner.config.store)
        self.backpressure = Backpressure(
            max_pending=settings.max_pending_tasks,
            namespace_quotas=dict(settings.namespace_quotas),
            pressure=MemoryPressure(settings.scheduler_memory_limit),
            max_namespaces=settings.max_namespaces,
        )
        self.metrics = ServerMetrics(self)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._namespaces: dict[str, str] = {}
        self._cache: dict[str, tuple[float, object]] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._failures_seen = 0
        self._failures_lock = threading.Lock()
        self._full_window = self.runner.config.window
        self._me = psutil.Process()
        self._closed = False
        self._close_lock = threading.Lock()
        retention = self.runner.config.retention
        #: forgets old finished jobs (``serve --retention``); None: everything is kept
        self.retention = Retention(retention) if retention else None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        if self.settings.heap_profiling and not tracemalloc.is_tracing():
            tracemalloc.start(10)
        self.runner.start()
        self.poll_pending()
        self.sample_rss()
        loops: list[tuple[str, Callable[[], None]]] = [
            ("pending", self._pending_loop),
            ("rss", self._rss_loop),
        ]
        if self.retention is not None:
            loops.append(("retention", self._retention_loop))
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"oomguard-api-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop the threads and the scheduler (which stops its workers); once is enough,
        and a second caller waits for the first to finish."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            for thread in self._threads:
                thread.join()
            self._threads.clear()
            self.stores.close()
            self.runner.close()

    @property
    def scheduler_stopped(self) -> bool:
        """The scheduler takes no more tasks: its loop died, or the server is stopping."""
        return self.runner.died is not None or not self.runner.alive

    def _pending_loop(self) -> None:
        while not self._stop.wait(self.settings.pending_poll_interval):
            try:
                self.poll_pending()
            except StoreError:
                continue  # a busy store: the counter stays as it was until the next poll

    def _retention_loop(self) -> None:
        assert self.retention is not None
        self.retention.run(self.stores.get, self._stop)

    def _rss_loop(self) -> None:
        while not self._stop.wait(self.settings.rss_sample_interval):
            self.sample_rss()

    # -- pending tasks and memory -----------------------------------------------------

    def poll_pending(self) -> None:
        """Count the store's open tasks by job (the index tasks_state: only open tasks are read)."""
        store = self.stores.get()
        counter = self.backpressure.pending
        mark = counter.begin_sync()
        known = self._namespaces
        by_job: dict[str, tuple[str, int]] = {}
        for job_id, n in store.queries.open_tasks_by_job().items():
            ns = known.get(job_id)
            if ns is None:
                ns = store.queries.job_namespace(job_id) or "default"
            by_job[job_id] = (ns, n)
        # Jobs with no open task are forgotten (a job submitted meanwhile is read back).
        self._namespaces = {job_id: ns for job_id, (ns, _) in by_job.items()}
        counter.sync(mark, by_job)
        keep = counter.namespaces() | set(self.settings.namespace_quotas)
        self.metrics.prune_namespaces(keep, self.settings.max_namespaces)

    def sample_rss(self) -> None:
        pressure = self.backpressure.pressure
        assert pressure is not None
        try:
            rss = int(self._me.memory_info().rss)
        except psutil.Error:
            return
        was = pressure.active
        if pressure.update(rss) != was:
            # Under pressure the scheduler keeps fewer tasks in memory (refilled from
            # the store later); restored once the pressure is gone.
            window = max(4 * self.runner.config.workers, self._full_window // 8)
            self._set_window(window if pressure.active else self._full_window)

    def _set_window(self, size: int) -> None:
        self.runner.set_window(size)

    # -- metrics source ---------------------------------------------------------------

    def _cached(self, key: str, ttl: float, compute: Callable[[], T]) -> T:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < ttl:
            return cast(T, hit[1])
        value = compute()
        self._cache[key] = (now, value)
        return value

    def task_counts(self) -> dict[str, int]:
        def compute() -> dict[str, int]:
            return self.stores.get().queries.task_states()

        result: dict[str, int] = self._cached("tasks", 1.0, compute)
        return result

    def task_counts_in(self, namespaces: frozenset[str]) -> dict[str, int]:
        def compute() -> dict[str, int]:
            return self.stores.get().queries.task_states(namespaces)

        key = "tasks:" + ",".join(sorted(namespaces))
        result: dict[str, int] = self._cached(key, 1.0, compute)
        if len(self._cache) > 1000:  # one entry per set of namespaces scraped
            self._cache.clear()
        return result

    def failed_tasks(self) -> dict[tuple[str, str], int]:
        def compute() -> dict[tuple[str, str], int]:
            return _relabel(self.stores.get().queries.failed_tasks_by_class())

        result: dict[tuple[str, str], int] = self._cached("failed", 5.0, compute)
        return result

    def failure_counts(self) -> dict[tuple[str, str], int]:
        """Failed attempts by (class, function), read incrementally: attempts are ended in
        id order up to the oldest running one, so each is counted once."""
        store = self.stores.get()
        with self._failures_lock:
            upper = store.queries.ended_attempts_upper()
            if upper > self._failures_seen:
                new = _relabel(store.queries.attempt_failures_between(self._failures_seen, upper))
                for key, n in new.items():
                    self._failures[key] = self._failures.get(key, 0) + n
                self._failures_seen = upper
            return dict(self._failures)

    def scheduler_rss(self) -> int:
        pressure = self.backpressure.pressure
        return pressure.last_rss if pressure is not None else 0

    def scheduler_memory_limit(self) -> int:
        return self.settings.scheduler_memory_limit

    def memory_budget(self) -> int | None:
        view = self.runner.view()
        return view.budget if view.started else None

    def memory_admitted(self) -> int | None:
        view = self.runner.view()
        return view.admitted if view.started else None

    def worker_rss(self) -> dict[str, int]:
        from oomguard.procfs import tree_rss

        return {name: tree_rss(pid) for name, pid in self.runner.view().workers.items()}

    def worker_recycles(self) -> dict[str, int]:
        return dict(self.runner.view().recycles)

    def worker_leftovers(self) -> dict[str, int]:
        return dict(self.runner.view().leftovers)

    def worker_isolation(self) -> dict[str, str]:
        return dict(self.runner.view().worker_isolation)

    def outbox_counts(self) -> dict[str, int]:
        def compute() -> dict[str, int]:
            outbox = self.stores.get().outbox
            return {"dropped": outbox.dropped(), "waiting": outbox.waiting()}

        result: dict[str, int] = self._cached("outbox", 1.0, compute)
        return result

    def fenced_writes(self) -> int:
        result: int = self._cached(
            "fenced", 1.0, lambda: self.stores.get().queries.counter("fenced_writes")
        )
        return result

    def retention_counts(self) -> dict[str, int]:
        if self.retention is None:
            return {}
        stats = self.retention.stats
        return {
            "jobs": stats.jobs,
            "tasks": stats.tasks,
            "locks": stats.locks,
            "events": stats.events,
            "blobs": stats.blobs,
            "errors": stats.errors,
        }

    # -- submissions ------------------------------------------------------------------

    def remember_job(self, job_id: str, namespace: str) -> None:
        """Note a new job's namespace, so that :meth:`poll_pending` need not read it back."""
        self._namespaces[job_id] = namespace


def _relabel(counts: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """Counts by (class, function) with a command's short label (``cmd:PROGRAM``) as its
    function, not its whole reference."""
    out: dict[tuple[str, str], int] = {}
    for (cls, fn), n in counts.items():
        key = (cls, label(fn))
        out[key] = out.get(key, 0) + n
    return out


@contextmanager
def serving_state(settings: ServerSettings) -> Iterator[ServerState]:
    """A started ServerState, closed on exit (for tests and the CLI)."""
    state = ServerState(settings)
    state.start()
    try:
        yield state
    finally:
        state.close()


__all__ = [
    "ServerSettings",
    "ServerState",
    "container_memory_limit",
    "resolve_scheduler_memory_limit",
    "serving_state",
]
