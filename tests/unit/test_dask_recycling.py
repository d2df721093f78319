"""Recycling a Dask worker: cordon, drain, restart, on the recycler's own thread, against a
fake Dask scheduler (the real-cluster behaviour is in tests/integration/test_dask_executor.py).

The fake holds what the recycle asks of the real one: the worker's status, the keys it is
processing and holds in memory, which keys ever started, and the restart through the nanny.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import pytest

pytest.importorskip("distributed")

from distributed.core import Status

if TYPE_CHECKING:
    import distributed

from fixtures.polling import wait_for
from oomguard.config import RunnerConfig
from oomguard.executors.dask import recycling as dask_recycling
from oomguard.executors.dask.recycling import Recycler

ADDRESS = "tcp://127.0.0.1:40001"
PREFIX = "oomguard-test"


class Task:
    def __init__(self, key: str) -> None:
        self.key = key


class Worker:
    def __init__(self, address: str) -> None:
        self.address = address
        self.status = Status.running
        self.processing: set[Task] = set()
        self.has_what: set[Task] = set()


class Comm:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)


class Scheduler:
    """The parts of ``distributed.Scheduler`` a recycle uses."""

    def __init__(self) -> None:
        self.workers = {ADDRESS: Worker(ADDRESS)}
        self.stream_comms = {ADDRESS: Comm()}
        self._oomguard_started: dict[str, bool] = {}
        #: what the worker had, and how it stood, when the restart came
        self.restarted: list[dict[str, Any]] = []
        self.restart_error: BaseException | None = None
        self.on_restart: Callable[[], None] = lambda: None

    def put(self, key: str, where: str, started: bool = True) -> None:
        ws = self.workers[ADDRESS]
        (ws.processing if where == "processing" else ws.has_what).add(Task(key))
        if started:
            self._oomguard_started[key] = True

    def gather(self, *keys: str) -> None:
        """What the executor's loop does: a finished key is gathered and released."""
        ws = self.workers[ADDRESS]
        ws.processing = {ts for ts in ws.processing if ts.key not in keys}
        ws.has_what = {ts for ts in ws.has_what if ts.key not in keys}

    def handle_worker_status_change(self, status: Status, ws: Worker, stimulus_id: str) -> None:
        ws.status = status

    async def restart_workers(self, workers: list[str], **kwargs: Any) -> dict[str, str]:
        assert kwargs["wait_for_workers"] is False  # never waits for the new worker
        self.on_restart()
        if self.restart_error is not None:
            raise self.restart_error
        for address in workers:
            ws = self.workers.pop(address)
            self.restarted.append(
                {
                    "status": ws.status,
                    "processing": {ts.key for ts in ws.processing},
                    "has_what": {ts.key for ts in ws.has_what},
                }
            )
        return dict.fromkeys(workers, "OK")


class Client:
    """Runs each function on the fake scheduler; ``before_call`` plays the loop."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.calls = 0
        self.before_call: Callable[[int], None] = lambda n: None

    def run_on_scheduler(self, function: Any, callback_timeout: float, **kwargs: Any) -> Any:
        assert callback_timeout > 0  # every question to the scheduler has a deadline
        self.calls += 1
        self.before_call(self.calls)
        got = function(dask_scheduler=self.scheduler, **kwargs)
        return asyncio.run(got) if inspect.iscoroutine(got) else got


def recycle(client: Client, reason: str = "memory_error") -> Recycler:
    """Recycle the worker and wait for the recycle to end."""
    recycler = Recycler(RunnerConfig(executor="dask", dask_address="tcp://x:1"), PREFIX)
    recycler.recycle(cast("distributed.Client", client), ADDRESS, reason)
    wait_for(lambda: not recycler.restarting)
    recycler.stop(timeout=30)
    return recycler


def test_what_runs_and_what_is_not_gathered_is_gathered_before_the_restart() -> None:
    sched = Scheduler()
    sched.put(f"{PREFIX}-1", "has_what")  # finished there, not gathered yet
    sched.put(f"{PREFIX}-2", "processing")  # running there
    sched.put(f"{PREFIX}-3", "processing", started=False)  # queued there
    sched.put("someone-else", "processing")  # not oomguard's: not waited for
    client = Client(sched)

    def loop(n: int) -> None:
        if n == 3:
            sched.gather(f"{PREFIX}-1")
        elif n == 5:
            sched.gather(f"{PREFIX}-2")

    client.before_call = loop
    recycler = recycle(client)
    (restart,) = sched.restarted
    # Cordoned (on the scheduler, and told to the worker) before anything else.
    assert restart["status"] is Status.closing_gracefully
    assert sched.stream_comms[ADDRESS].sent[0]["status"] == "closing_gracefully"
    # Restarted once nothing of oomguard's ran or waited to be gathered there.
    assert restart["processing"] == {f"{PREFIX}-3", "someone-else"}
    assert restart["has_what"] == set()
    assert recycler.recycles == {"memory_error": 1}
    # The queued one dies with the worker: oomguard's doing, on that worker only.
    assert recycler.took(f"{PREFIX}-3")
    assert recycler.took(f"{PREFIX}-3", ADDRESS)
    assert not recycler.took(f"{PREFIX}-3", "tcp://127.0.0.1:40002")
    assert not recycler.took(f"{PREFIX}-1") and not recycler.took(f"{PREFIX}-2")
    assert not recycler.took("someone-else")


def test_the_drain_ends_at_its_deadline_and_what_is_left_is_oomguards_doing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dask_recycling, "DRAIN_TIMEOUT_S", 0.3)
    sched = Scheduler()
    sched.put(f"{PREFIX}-1", "processing")  # runs for ever
    sched.put(f"{PREFIX}-2", "has_what")  # never gathered (a loop that is stuck)
    recycler = recycle(Client(sched))
    (restart,) = sched.restarted
    assert restart["processing"] == {f"{PREFIX}-1"}
    assert recycler.took(f"{PREFIX}-1", ADDRESS) and recycler.took(f"{PREFIX}-2")


def test_a_death_while_the_restart_is_under_way_is_oomguards_doing() -> None:
    sched = Scheduler()
    client = Client(sched)
    recycler = Recycler(RunnerConfig(executor="dask", dask_address="tcp://x:1"), PREFIX)
    during: list[bool] = []
    # A key the scheduler gave the worker after the drain's last look (it cannot, once
    # cordoned; a worker's own status change can race the cordon) dies with it too.
    sched.on_restart = lambda: during.append(recycler.took(f"{PREFIX}-9", ADDRESS))
    recycler.recycle(cast("distributed.Client", client), ADDRESS, "max_tasks")
    wait_for(lambda: not recycler.restarting)
    assert during == [True]
    assert not recycler.took(f"{PREFIX}-9", ADDRESS)  # not once the restart is over


def test_a_worker_that_cannot_be_restarted_goes_back_to_work() -> None:
    sched = Scheduler()
    sched.restart_error = OSError("the nanny does not answer")
    recycle(Client(sched))
    assert sched.workers[ADDRESS].status is Status.running
    assert [m["status"] for m in sched.stream_comms[ADDRESS].sent] == [
        "closing_gracefully",
        "running",
    ]


def test_a_worker_already_gone_is_not_restarted() -> None:
    sched = Scheduler()
    sched.workers.clear()
    recycler = recycle(Client(sched))
    assert sched.restarted == [] and recycler.recycles == {"memory_error": 1}


def test_a_worker_is_recycled_once_at_a_time_and_stop_cuts_its_drain_short() -> None:
    sched = Scheduler()
    sched.put(f"{PREFIX}-1", "processing")  # runs past the drain's 30 s
    client = Client(sched)
    polled = threading.Event()
    client.before_call = lambda n: polled.set() if n >= 2 else None
    recycler = Recycler(RunnerConfig(executor="dask", dask_address="tcp://x:1"), PREFIX)
    recycler.recycle(cast("distributed.Client", client), ADDRESS, "rss_growth")
    # under way: not again
    recycler.recycle(cast("distributed.Client", client), ADDRESS, "rss_growth")
    assert polled.wait(10)
    recycler.stop(timeout=30)  # the drain ends at once, the worker is restarted
    assert len(sched.restarted) == 1 and recycler.recycles == {"rss_growth": 1}
    assert recycler.took(f"{PREFIX}-1", ADDRESS)
    # stopped: no more recycles
    recycler.recycle(cast("distributed.Client", client), ADDRESS, "rss_growth")
    assert recycler.recycles == {"rss_growth": 1}


def test_a_worker_that_dies_while_it_drains_is_not_restarted_and_its_deaths_are_its_own() -> None:
    sched = Scheduler()
    sched.put(f"{PREFIX}-1", "processing")
    client = Client(sched)
    # An OOM kill, say, during the drain: its attempt's death must be classified.
    client.before_call = lambda n: sched.workers.clear() if n == 3 else None
    recycler = recycle(client)
    assert sched.restarted == []
    assert not recycler.took(f"{PREFIX}-1") and not recycler.took(f"{PREFIX}-1", ADDRESS)
