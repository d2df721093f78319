"""The composition root: builds the scheduler's parts from the config, once, at start
(notifications, isolation, the executor, the budget, admission and estimates, the kernel
log, the recorder, dispatch, the Parquet part sink), and stops what it started when one
part cannot be built."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomguard.config import RunnerConfig
from oomguard.results.parquet import PartPolicy
from oomguard.results.sink import PartSink
from oomguard.scheduler.admission import Admission, Estimates
from oomguard.scheduler.budget import check_limits, derive_budget
from oomguard.scheduler.dispatch import Dispatcher
from oomguard.scheduler.recorder import AttemptRecorder
from oomguard.store.blobs import BLOB_THRESHOLD
from oomguard.store.leases import ATTEMPT_ID_BLOCK

if TYPE_CHECKING:
    from oomguard.cgroups.detect import IsolationPlan
    from oomguard.executors.base import Executor
    from oomguard.kernlog.watch import KernelLogWatch
    from oomguard.notify.base import Notifier
    from oomguard.scheduler.endings import Endings
    from oomguard.scheduler.window import Window
    from oomguard.store.leases import Recovery
    from oomguard.store.protocol import Store
    from oomguard.store.writes import PendingWrites

#: how long stopping waits for queued notifications to be delivered
NOTIFY_DRAIN_TIMEOUT = 10.0


@dataclass(frozen=True)
class Parts:
    """What a started scheduler is made of."""

    #: Sentry, webhooks, JSON logs (None: none configured)
    notifier: Notifier | None
    #: what this scheduler found of dead schedulers' attempts at start
    recovery: Recovery
    isolation: IsolationPlan
    executor: Executor
    #: the memory budget admission hands out (bytes)
    budget: int
    admission: Admission
    estimates: Estimates
    kmsg: KernelLogWatch
    recorder: AttemptRecorder
    dispatcher: Dispatcher
    sink: PartSink


def assemble(
    config: RunnerConfig,
    *,
    scheduler_id: str,
    store: Store,
    writes: PendingWrites,
    window: Window,
    endings: Endings | None = None,
) -> Parts:
    """Build and start the parts; on a failure, stop those started and raise."""
    from oomguard.cgroups.detect import detect_isolation
    from oomguard.kernlog.watch import KernelLogWatch
    from oomguard.notify.build import build_notifier, outbox_filter, start_outbox

    started: list[Callable[[], None]] = []
    try:
        notifier = build_notifier(config)  # a bad DSN or secret file stops us here
        if notifier is not None:
            started.append(lambda: notifier.close(NOTIFY_DRAIN_TIMEOUT))
        recovery = store.leases.register(
            scheduler_id, config.lease_ttl, config.lost_retries, replica=config.replica
        )
        start_outbox(notifier, scheduler_id, config.lease_ttl)  # one replica delivers at a time
        isolation = detect_isolation(config.isolation)
        if config.executor == "local":
            check_limits(config, isolation.own_limit_bytes)
        executor = _make_executor(config, isolation, store)
        started.append(executor.stop)
        executor.start()
        # A remote executor (Dask) knows the memory of its workers better than this machine.
        remote_budget = executor.memory_budget()
        if remote_budget is not None and config.memory_budget is None:
            budget = remote_budget
        else:
            budget = derive_budget(config, isolation.own_limit_bytes)
        cap = min(config.worker_memory or budget, budget)
        remote_cap = executor.max_task_memory()
        if remote_cap is not None:
            cap = min(cap, remote_cap)
        store.admin.set_meta("memory_budget", str(budget))
        store.admin.set_meta("isolation", isolation.mode)
        admission = Admission(budget=budget, cap=cap, starvation_wait=config.starvation_wait)
        estimates = Estimates(default=config.default_task_memory)
        estimates.load(store.estimate_rows(), cap)
        kmsg = KernelLogWatch(config.kernel_log)
        started.append(kmsg.stop)
        kmsg.start()
        recorder = AttemptRecorder(
            config=config,
            scheduler_id=scheduler_id,
            store=store,
            writes=writes,
            admission=admission,
            estimates=estimates,
            executor=executor,
            kmsg=kmsg,
            requeue=window.put_back,
            next_attempt=attempt_ids(store) if config.replica else store.next_attempt_id(),
            notify=notifier.notify if notifier is not None else None,
            keep=outbox_filter(notifier),
            endings=endings,
        )
        dispatcher = Dispatcher(
            store=store,
            window=window,
            admission=admission,
            estimates=estimates,
            recorder=recorder,
            executor=executor,
            workers=config.workers,
        )
        sink = PartSink(store.location, PartPolicy.of(config))
        sink.start()
    except BaseException:
        for stop in reversed(started):
            with contextlib.suppress(Exception):
                stop()
        raise
    return Parts(
        notifier=notifier,
        recovery=recovery,
        isolation=isolation,
        executor=executor,
        budget=budget,
        admission=admission,
        estimates=estimates,
        kmsg=kmsg,
        recorder=recorder,
        dispatcher=dispatcher,
        sink=sink,
    )


def attempt_ids(store: Store) -> Iterator[int]:
    """A replica's attempt ids: drawn from blocks reserved in the store as each runs out,
    so replicas sharing a store never number two attempts alike."""
    while True:
        first = store.leases.reserve_attempt_ids()
        yield from range(first, first + ATTEMPT_ID_BLOCK)


def _make_executor(config: RunnerConfig, isolation: IsolationPlan, store: Store) -> Executor:
    if config.executor == "dask":
        from oomguard.executors.dask import DaskExecutor

        return DaskExecutor(config, isolation, blobs=store.blobs, blob_threshold=BLOB_THRESHOLD)
    from oomguard.executors.local import LocalExecutor

    return LocalExecutor(config, isolation)
