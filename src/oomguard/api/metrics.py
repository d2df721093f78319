"""Prometheus metrics of the server, one registry per app (never the global one).

Names as in the README ("Server mode"). Gauges that describe the store or the scheduler are
read when ``/metrics`` is scraped, from a :class:`MetricsSource`; store queries are cached
briefly so frequent scrapes of a large store stay cheap.

A caller that reaches only some namespaces (:mod:`~oomguard.api.tenancy`) gets a scoped
rendering (:meth:`ServerMetrics.render` with its namespaces): its namespaces' tasks by
state and accepted tasks, and the server's memory gauges; nothing by function, worker or
other namespace.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

TASK_STATES = ("pending", "ready", "queued", "running", "succeeded", "failed", "cancelled")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsSource(Protocol):
    """What the server exposes to its metrics (each call may be made from any thread)."""

    def task_counts(self) -> dict[str, int]: ...

    def task_counts_in(self, namespaces: frozenset[str]) -> dict[str, int]: ...

    def failure_counts(self) -> dict[tuple[str, str], int]: ...

    def failed_tasks(self) -> dict[tuple[str, str], int]: ...

    def scheduler_rss(self) -> int: ...

    def scheduler_memory_limit(self) -> int: ...

    def memory_budget(self) -> int | None: ...

    def memory_admitted(self) -> int | None: ...

    def worker_rss(self) -> dict[str, int]: ...

    def worker_recycles(self) -> dict[str, int]: ...
    def worker_leftovers(self) -> dict[str, int]: ...

    def worker_isolation(self) -> dict[str, str]: ...

    def retention_counts(self) -> dict[str, int]: ...

    def outbox_counts(self) -> dict[str, int]: ...

    def fenced_writes(self) -> int: ...


class _StateCollector(Collector):
    """The gauges read from the source; of ``namespaces`` only, where given."""

    def __init__(self, source: MetricsSource, namespaces: frozenset[str] | None = None) -> None:
        self.source = source
        self.namespaces = namespaces

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        src = self.source
        tasks = GaugeMetricFamily("oomguard_tasks", "Tasks in the store by state", labels=["state"])
        scoped = self.namespaces is not None
        if self.namespaces is None:
            counts = src.task_counts()
        else:
            counts = src.task_counts_in(self.namespaces) if self.namespaces else {}
        for state in TASK_STATES:
            tasks.add_metric([state], counts.get(state, 0))
        yield tasks
        yield from self._memory()
        if not scoped:
            yield from self._server()

    def _memory(self) -> Iterator[Metric]:
        src = self.source
        yield GaugeMetricFamily(
            "oomguard_scheduler_rss_bytes",
            "Resident memory of the scheduler/server process",
            value=src.scheduler_rss(),
        )
        yield GaugeMetricFamily(
            "oomguard_scheduler_memory_limit_bytes",
            "The scheduler's own memory limit (--scheduler-memory-limit)",
            value=src.scheduler_memory_limit(),
        )
        budget = src.memory_budget()
        if budget is not None:
            yield GaugeMetricFamily(
                "oomguard_memory_budget_bytes",
                "Memory the scheduler may hand out to tasks",
                value=budget,
            )
        admitted = src.memory_admitted()
        if admitted is not None:
            yield GaugeMetricFamily(
                "oomguard_memory_admitted_bytes",
                "Memory admitted to running attempts",
                value=admitted,
            )

    def _server(self) -> Iterator[Metric]:
        src = self.source
        failures = CounterMetricFamily(
            "oomguard_attempt_failures",
            "Failed attempts by failure class and task function",
            labels=["class", "function"],
        )
        for (cls, fn), n in sorted(src.failure_counts().items()):
            failures.add_metric([cls, fn], n)
        yield failures
        failed = GaugeMetricFamily(
            "oomguard_failed_tasks",
            "Tasks failed for good by final class (needs_more_memory, ...) and function",
            labels=["class", "function"],
        )
        for (cls, fn), n in sorted(src.failed_tasks().items()):
            failed.add_metric([cls, fn], n)
        yield failed
        workers = GaugeMetricFamily(
            "oomguard_worker_rss_bytes",
            "Resident memory of each worker (with children)",
            labels=["worker"],
        )
        for name, rss in sorted(src.worker_rss().items()):
            workers.add_metric([name], rss)
        yield workers
        recycles = CounterMetricFamily(
            "oomguard_worker_recycles", "Workers replaced, by reason", labels=["reason"]
        )
        for reason, n in sorted(src.worker_recycles().items()):
            recycles.add_metric([reason], n)
        yield recycles
        leftovers = CounterMetricFamily(
            "oomguard_worker_leftovers",
            "Cleaned up after workers, by kind: processes_killed (left by a dead worker "
            "without a cgroup), cgroups_not_removed (logged; a process stuck in the kernel)",
            labels=["kind"],
        )
        counts = src.worker_leftovers()
        for kind in ("cgroups_not_removed", "processes_killed"):
            leftovers.add_metric([kind], counts.get(kind, 0))
        yield leftovers
        isolation = GaugeMetricFamily(
            "oomguard_worker_isolation",
            "1 for each worker (a Dask worker by address) and how it isolates attempts: "
            "cgroup-v1, cgroup-v2, watchdog, or thread (not at all)",
            labels=["worker", "mode"],
        )
        for name, mode in sorted(src.worker_isolation().items()):
            isolation.add_metric([name, mode], 1)
        yield isolation
        outbox = src.outbox_counts()
        yield CounterMetricFamily(
            "oomguard_notifications_dropped",
            "Webhook notices the store's outbox dropped (its oldest, past --notify-outbox) "
            "before every receiver had them",
            value=outbox.get("dropped", 0),
        )
        yield GaugeMetricFamily(
            "oomguard_notifications_waiting",
            "Webhook notices in the store's outbox that some receiver has not had yet",
            value=outbox.get("waiting", 0),
        )
        yield CounterMetricFamily(
            "oomguard_fenced_writes",
            "Writes of a replica's attempts refused because another replica had taken it over "
            "(its lease expired): dropped, never recorded over the new attempts",
            value=src.fenced_writes(),
        )
        kept = src.retention_counts()
        if kept:
            forgotten = CounterMetricFamily(
                "oomguard_retention_deleted",
                "What retention (serve --retention) deleted: jobs, tasks, locks, events, "
                "blobs; and its failed steps (errors)",
                labels=["kind"],
            )
            for kind, n in sorted(kept.items()):
                forgotten.add_metric([kind], n)
            yield forgotten


class ServerMetrics:
    """The registry of one app and the counters the app increments itself."""

    def __init__(self, source: MetricsSource) -> None:
        self.registry = CollectorRegistry()
        self.rejected = Counter(
            "oomguard_submissions_rejected",
            "Submissions refused by the server, by reason",
            ["reason"],
            registry=self.registry,
        )
        for reason in (
            "queue_full",
            "namespace_quota",
            "scheduler_memory_pressure",
            "payload_too_large",
            "batch_too_large",
            "too_many_namespaces",
        ):
            self.rejected.labels(reason)
        self.accepted = Counter(
            "oomguard_submitted_tasks",
            "Tasks accepted over HTTP",
            ["namespace"],
            registry=self.registry,
        )
        self._labelled: set[str] = set()
        self._labels_lock = threading.Lock()
        self._source = source
        self.registry.register(_StateCollector(source))

    def count_accepted(self, namespace: str, n: int) -> None:
        """Count ``n`` tasks accepted into ``namespace``."""
        with self._labels_lock:
            self._labelled.add(namespace)
            self.accepted.labels(namespace).inc(n)

    def prune_namespaces(self, keep: set[str], most: int | None) -> None:
        """Once more than ``most`` namespaces are counted, drop the counters of those not in
        ``keep`` (with no pending task): clients choose namespaces, and each would stay in
        every scrape for ever. A dropped counter starts again from 0 (a counter reset)."""
        if most is None:
            return
        with self._labels_lock:
            if len(self._labelled) <= most:
                return
            for ns in self._labelled - keep:
                self.accepted.remove(ns)
            self._labelled &= keep

    def render(self, namespaces: frozenset[str] | None = None) -> bytes:
        """The exposition text: everything, or (``namespaces``) what a caller that reaches
        only those namespaces may see."""
        if namespaces is None:
            return generate_latest(self.registry)
        scoped = CollectorRegistry(auto_describe=False)
        scoped.register(_StateCollector(self._source, namespaces))
        scoped.register(_Only(self.accepted, "namespace", namespaces))
        return generate_latest(scoped)


class _Only(Collector):
    """A metric's samples whose ``label`` is one of ``values``."""

    def __init__(self, metric: Collector, label: str, values: frozenset[str]) -> None:
        self.metric = metric
        self.label = label
        self.values = values

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for family in self.metric.collect():
            family.samples = [s for s in family.samples if s.labels.get(self.label) in self.values]
            yield family


__all__ = ["CONTENT_TYPE", "MetricsSource", "ServerMetrics"]
