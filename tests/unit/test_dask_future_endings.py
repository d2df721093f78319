"""How a Dask future that did not finish ends its attempts (no cluster: the future is the
input here; the real-cluster behaviour is in tests/integration/test_dask_executor.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest

pytest.importorskip("distributed")

from oomguard.config import RunnerConfig
from oomguard.errors import TaskInputError
from oomguard.executors.dask.cluster import DaskWorker
from oomguard.executors.dask.executor import RECYCLED, DaskExecutor
from oomguard.executors.dask.flights import Ended, Flight
from oomguard.executors.dask.remote.answers import GroupAnswer, Outcome
from oomguard.executors.events import AttemptEnded, Requeued
from oomguard.worker.calls import AggregateCall, CallItem, HeldRef, JsonCall

if TYPE_CHECKING:
    import distributed
    from distributed.scheduler import WorkerState


class EndedFuture:
    """What the done-callback hands over: a key, a status, maybe an exception."""

    def __init__(self, status: str, exception: BaseException | None = None) -> None:
        self.key = "oomguard-test-1"
        self.status = status
        self._exception = exception
        self.released = False

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._exception

    def release(self) -> None:
        self.released = True


def _ended(
    status: str, exception: BaseException | None = None, recycled_on: str | None = None
) -> tuple[list[Any], Any]:
    """End a flight of attempts 1 and 2 with a future of ``status``; ``recycled_on``: the
    address of a worker oomguard restarted while the flight's key was on it."""
    ex = DaskExecutor(RunnerConfig(executor="dask", dask_address="tcp://127.0.0.1:1"), None)
    future = EndedFuture(status, exception)
    if recycled_on is not None:
        ex.recycler._doom(recycled_on, [future.key])
    runs = [SimpleNamespace(attempt_id=i, worker=None, clean=False) for i in (1, 2)]
    flight = Flight(runs, cast("distributed.Future[GroupAnswer]", future), limit=0, sent=0.0)
    ex.inflight[flight.key] = flight
    events = ex._failed_future(flight)
    assert future.released and flight.key not in ex.inflight
    return events, ex


def test_a_future_lost_with_its_worker_is_killed_not_an_error() -> None:
    # Dask marks a finished key "lost" when the worker holding its result dies: the
    # attempts ran, their results are gone; that is a worker death, not the task's error.
    events, ex = _ended("lost")
    assert [(type(e), e.attempt_id, e.ok, e.failure_class) for e in events] == [
        (AttemptEnded, 1, False, "killed"),
        (AttemptEnded, 2, False, "killed"),
    ]
    assert events[0].evidence["dask_future_status"] == "lost"
    assert ex.counters.lost_before_gather == 2


def test_results_lost_with_a_worker_oomguard_restarted_are_requeued_not_killed() -> None:
    events, ex = _ended("lost", recycled_on="tcp://127.0.0.1:40001")
    assert events == [Requeued(1, RECYCLED), Requeued(2, RECYCLED)]
    assert ex.counters.lost_before_gather == 0 and ex.counters.requeued == 2


def test_a_killed_worker_oomguard_restarted_requeues_its_attempts() -> None:
    from distributed.scheduler import KilledWorker

    worker = SimpleNamespace(address="tcp://127.0.0.1:40001", pid=4242)
    err = KilledWorker("oomguard-test-1", cast("WorkerState", worker), 0)
    events, ex = _ended("error", err, recycled_on=worker.address)
    assert events == [Requeued(1, RECYCLED), Requeued(2, RECYCLED)]
    assert not ex.deaths  # not a death to classify


def test_a_killed_worker_elsewhere_is_a_death_even_if_its_key_was_on_a_recycled_one() -> None:
    from distributed.scheduler import KilledWorker

    # Moved off the recycled worker (stolen) before it went, then died on another one.
    worker = SimpleNamespace(address="tcp://127.0.0.1:40002", pid=4242)
    err = KilledWorker("oomguard-test-1", cast("WorkerState", worker), 0)
    events, ex = _ended("error", err, recycled_on="tcp://127.0.0.1:40001")
    assert events == []  # waits for the nanny's evidence, then classified
    assert [d.address for d in ex.deaths] == [worker.address]


def test_a_future_that_raised_is_an_error_with_the_exception() -> None:
    events, _ = _ended("error", ValueError("bad input"))
    assert {e.failure_class for e in events} == {"error"}
    assert events[0].message == "ValueError: bad input"


def test_a_cancelled_future_requeues_its_attempts() -> None:
    events, _ = _ended("cancelled")
    assert events == [Requeued(1), Requeued(2)]


class RecordingClient:
    """Takes submissions and never finishes them: what is in flight stays in flight."""

    def __init__(self) -> None:
        self.submitted: list[list[CallItem]] = []
        #: the limit each group was sent with (run_calls(items, limit))
        self.limits: list[int | None] = []

    def submit(
        self, fn: Any, items: list[CallItem], limit: int | None, *, key: str, **kwargs: Any
    ) -> Any:
        self.submitted.append(items)
        self.limits.append(limit)
        future = EndedFuture("pending")
        future.key = key
        future.add_done_callback = lambda callback: None  # type: ignore[attr-defined]
        return future


def test_inputs_are_read_when_a_group_is_sent_and_groups_are_bounded_by_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[int] = []

    def read_item(run: Any, held: Any = None) -> CallItem:
        reads.append(run.attempt_id)  # an aggregation's inputs: 5 MiB of results
        return AggregateCall(run.attempt_id, "m:g", None, (b"r" * (5 * 1024 * 1024),))

    ex = DaskExecutor(RunnerConfig(executor="dask", dask_address="tcp://127.0.0.1:1"), None)
    client = RecordingClient()
    ex.client = cast("distributed.Client", client)
    ex.workers = {"tcp://w1": DaskWorker(nthreads=1)}  # a window of 4 Dask tasks
    runs = [SimpleNamespace(attempt_id=i, limit=0, worker=None, clean=False) for i in range(64)]
    ex.submit(runs, read_item)
    # 4 groups in flight (groups of at most 8, and under 16 MiB of inputs: 3 aggregations),
    # and nothing read for the rest but the one that did not fit the last group.
    assert [[i.attempt_id for i in items] for items in client.submitted] == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7],
        [8, 9, 10],
    ]
    assert reads == list(range(12))  # each read once: 11 waits with its item
    assert ex.backlog.attempts == 64 - 11


def test_an_attempt_whose_inputs_cannot_be_read_ends_as_error_and_its_group_still_runs() -> None:
    def read_item(run: Any, held: Any = None) -> CallItem:
        if run.attempt_id == 1:
            raise TaskInputError("input blob abc is missing (no file 'x.blobs/abc')")
        return JsonCall(run.attempt_id, "m:f", "{}")

    ex = DaskExecutor(RunnerConfig(executor="dask", dask_address="tcp://127.0.0.1:1"), None)
    client = RecordingClient()
    ex.client = cast("distributed.Client", client)
    ex.workers = {"tcp://w1": DaskWorker(nthreads=1)}
    runs = [
        SimpleNamespace(attempt_id=i, limit=64 * 1024 * 1024, worker=None, clean=False)
        for i in range(3)
    ]
    ex.submit(runs, read_item)
    assert [[i.attempt_id for i in items] for items in client.submitted] == [[0, 2]]
    # The group runs on the worker host under the limit admission gave it.
    assert client.limits == [64 * 1024 * 1024]
    done = ex.done.get_nowait()
    assert isinstance(done, Ended)
    event = done.event
    assert isinstance(event, AttemptEnded)
    assert (event.attempt_id, event.ok, event.failure_class) == (1, False, "error")
    assert event.message and "input blob abc is missing" in event.message
    assert event.evidence["input_error"]


def test_a_clean_group_sends_its_first_item_marked_clean_on_a_copy() -> None:
    read: list[CallItem] = []

    def read_item(run: Any, held: Any = None) -> CallItem:
        read.append(JsonCall(run.attempt_id, "m:f", "{}"))
        return read[-1]

    ex = DaskExecutor(RunnerConfig(executor="dask", dask_address="tcp://127.0.0.1:1"), None)
    client = RecordingClient()
    ex.client = cast("distributed.Client", client)
    ex.workers = {"tcp://w1": DaskWorker(nthreads=1)}
    runs = [SimpleNamespace(attempt_id=i, limit=0, worker=None, clean=i == 0) for i in range(2)]
    ex.submit(runs, read_item)
    ((first, second),) = client.submitted
    assert first.clean and not second.clean  # a probe's peak: measured clean
    assert first == JsonCall(0, "m:f", "{}", clean=True) and not read[0].clean


def test_aggregations_go_where_their_inputs_are_held_and_come_back_requeued_if_gone() -> None:
    class Client(RecordingClient):
        def __init__(self) -> None:
            super().__init__()
            self.where: list[dict[str, Any]] = []

        def submit(self, fn: Any, items: Any, limit: Any, *, key: str, **kwargs: Any) -> Any:
            self.where.append({k: v for k, v in kwargs.items() if k in ("workers", "priority")})
            return super().submit(fn, items, limit, key=key, **kwargs)

    ex = DaskExecutor(RunnerConfig(executor="dask", dask_address="tcp://127.0.0.1:1"), None)
    client = Client()
    ex.client = cast("distributed.Client", client)
    ex.workers = {"tcp://a": DaskWorker(nthreads=1), "tcp://b": DaskWorker(nthreads=1)}
    ex.held.saw("tcp://a", GroupAnswer("tcp://a", 1, (Outcome(1, payload=b"x"),), held=(1,)))
    ex.held.saw("tcp://b", GroupAnswer("tcp://b", 2, (Outcome(2, payload=b"x"),), held=(2,)))
    inputs = {10: [1], 11: [2], 12: [None]}  # aggregation attempt -> its replicates' attempts

    def read_item(run: Any, held: Any = None) -> CallItem:
        at, ids = held(inputs[run.attempt_id])
        results = tuple(HeldRef(a) for a in ids)
        return AggregateCall(run.attempt_id, "m:g", None, results, at=at if ids else None)

    runs = [SimpleNamespace(attempt_id=i, limit=0, worker=None, clean=False) for i in (10, 11, 12)]
    ex.submit(runs, read_item)
    # One Dask task per worker holding inputs; one needing none joins the last.
    assert [[i.attempt_id for i in items] for items in client.submitted] == [[10], [11, 12]]
    assert client.where == [
        {"workers": ["tcp://a"], "priority": 1},
        {"workers": ["tcp://b"], "priority": 1},
    ]
    flight = ex.inflight[f"{ex.prefix}-10"]
    events = ex._outcomes(flight, GroupAnswer("tcp://a", 1, missing=True))
    assert [(type(e), e.attempt_id) for e in events] == [(Requeued, 10)]
