"""What oomguard asks of the Dask scheduler, run there (``client.run_on_scheduler``): which
keys ever started, the scheduler's settings, where a key runs, a worker's status (cordon),
what oomguard's a worker still has, and restarting a worker through its nanny; and the
scheduler plugin :class:`StartGuard`, which learns the started keys without a round trip
and turns a rerun of a finished key into :func:`refuse_rerun`.

Each function takes the ``dask_scheduler`` distributed passes in; the client side
(:mod:`oomguard.executors.dask.cluster`) sends them by reference, so the scheduler imports
this module (oomguard installed beside distributed, as on the workers).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Any

import dask
from dask.task_spec import Task
from distributed import Scheduler, get_worker
from distributed.core import Status
from distributed.diagnostics.plugin import SchedulerPlugin

from oomguard.executors.dask.remote import KEY_PREFIX, STARTED_TOPIC
from oomguard.executors.dask.remote.answers import GroupAnswer

#: started keys the Dask scheduler remembers (oldest forgotten first)
STARTED_KEEP = 100_000
#: the scheduler attribute the started keys are kept in
STARTED_ATTR = "_oomguard_started"


def first_start(dask_scheduler: Scheduler, key: str) -> bool:
    """True the first time ``key`` starts, False ever after."""
    # Kept on the scheduler object itself, so it lives exactly as long as the scheduler.
    state = vars(dask_scheduler)
    started: OrderedDict[str, bool] | None = state.get(STARTED_ATTR)
    if started is None:
        started = state[STARTED_ATTR] = OrderedDict()
    if key in started:
        return False
    started[key] = True
    while len(started) > STARTED_KEEP:
        started.popitem(last=False)
    return True


class StartGuard(SchedulerPlugin):
    """The Dask scheduler's side of "nothing finished runs again", with no round trip
    before each Dask task.

    * A Dask worker names each of oomguard's keys on :data:`STARTED_TOPIC` as it starts it
      (``Worker.log_event``: a message on the stream it already has to the scheduler,
      sent before the task's own ``task-finished``): :meth:`log_event` marks it started
      (:func:`first_start`), for :func:`was_started` and :func:`held_on`.
    * A key of oomguard's that leaves ``memory`` (its results lost with their worker, or
      released) will never run its group again: its ``run_spec`` becomes
      :func:`refuse_rerun`, so if Dask recomputes it (its worker died before oomguard
      gathered it), the worker answers ``duplicate`` and runs nothing. The swap happens in
      the transition out of ``memory``, before the key can be sent to another worker.
    """

    name = "oomguard-start-guard"
    #: registered once per scheduler: the next Runner finds it there
    idempotent = True

    def __init__(self) -> None:
        self.scheduler: Scheduler | None = None

    async def start(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def log_event(self, topic: str, msg: Any) -> None:
        if topic == STARTED_TOPIC and isinstance(msg, str) and self.scheduler is not None:
            first_start(self.scheduler, msg)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start != "memory" or finish == "memory" or self.scheduler is None:
            return
        if not (isinstance(key, str) and key.startswith(KEY_PREFIX)):
            return
        ts = self.scheduler.tasks.get(key)
        if ts is not None and ts.run_spec is not None:
            ts.run_spec = Task(key, refuse_rerun)


def refuse_rerun() -> GroupAnswer:
    """What a finished key of oomguard's runs if Dask computes it again (on a Dask
    worker): nothing, answered ``duplicate`` (:class:`StartGuard`)."""
    try:
        address: str | None = str(get_worker().address)
    except ValueError:
        address = None
    return GroupAnswer(address, os.getpid(), duplicate=True)


def was_started(dask_scheduler: Scheduler, key: str) -> bool:
    """Whether ``key`` ever started running on a worker."""
    return key in (getattr(dask_scheduler, STARTED_ATTR, None) or {})


def settings(dask_scheduler: Scheduler) -> dict[str, object]:
    """The scheduler's settings that bear on oomguard's promises."""
    return {
        "allowed_failures": dask_scheduler.allowed_failures,
        "worker_saturation": dask.config.get("distributed.scheduler.worker-saturation"),
    }


def processing_on(dask_scheduler: Scheduler, key: str) -> str | None:
    """The address of the worker running ``key`` now, if the scheduler knows."""
    ts = dask_scheduler.tasks.get(key)
    ws = getattr(ts, "processing_on", None)
    return None if ws is None else str(ws.address)


def cordon(dask_scheduler: Scheduler, address: str) -> bool:
    """Stop giving the worker at ``address`` anything more to run (see
    :func:`oomguard.executors.dask.cluster.cordon`); False: no such worker."""
    return _set_status(dask_scheduler, address, Status.closing_gracefully, "cordon")


def uncordon(dask_scheduler: Scheduler, address: str) -> bool:
    """Undo :func:`cordon`: the worker at ``address`` runs tasks again."""
    return _set_status(dask_scheduler, address, Status.running, "uncordon")


def _set_status(dask_scheduler: Scheduler, address: str, status: Status, why: str) -> bool:
    """Set a worker's status here, then tell the worker."""
    ws = dask_scheduler.workers.get(address)
    if ws is None:
        return False
    stimulus_id = f"oomguard-{why}-{time.time()}"
    dask_scheduler.handle_worker_status_change(status, ws, stimulus_id)
    comm = dask_scheduler.stream_comms.get(address)
    if comm is not None:
        comm.send({"op": "worker-status-change", "status": status.name, "stimulus_id": stimulus_id})
    return True


def held_on(
    dask_scheduler: Scheduler, address: str, prefix: str
) -> tuple[list[str], list[str]] | None:
    """The keys starting with ``prefix`` the worker at ``address`` has, ``(busy, queued)``
    (see :func:`oomguard.executors.dask.cluster.held_on`); None: no such worker."""
    ws = dask_scheduler.workers.get(address)
    if ws is None:
        return None
    busy: list[str] = []
    queued: list[str] = []
    for ts in ws.processing:
        key = str(ts.key)
        if key.startswith(prefix):
            (busy if was_started(dask_scheduler, key) else queued).append(key)
    busy += [str(ts.key) for ts in ws.has_what if str(ts.key).startswith(prefix)]
    return busy, queued


async def restart_worker(
    dask_scheduler: Scheduler, address: str, prefix: str, timeout: float
) -> tuple[list[str], dict[str, str]]:
    """Restart the worker at ``address`` through its nanny: the keys starting with
    ``prefix`` it had, and distributed's answer by address (``"OK"``)."""
    ws = dask_scheduler.workers.get(address)
    if ws is None:
        return [], {address: "gone already"}
    keys = [str(ts.key) for ts in (*ws.processing, *ws.has_what)]
    got = await dask_scheduler.restart_workers(
        [address],
        timeout=timeout,
        wait_for_workers=False,
        on_error="return",
        stimulus_id=f"oomguard-recycle-{time.time()}",
    )
    return [key for key in keys if key.startswith(prefix)], {
        str(k): str(v) for k, v in dict(got).items()
    }
