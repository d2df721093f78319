"""How a Dask future that did not finish ends its attempts (no cluster: the future is the
input here; the real-cluster behaviour is in tests/integration/test_dask_executor.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("distributed")

from oomguard.config import RunnerConfig
from oomguard.executors.dask import DaskExecutor, Flight


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


def _ended(status: str, exception: BaseException | None = None) -> tuple[list[Any], Any]:
    ex = DaskExecutor(RunnerConfig(executor="dask", dask_address="tcp://127.0.0.1:1"), None)
    future = EndedFuture(status, exception)
    runs = [SimpleNamespace(attempt_id=i, worker=None) for i in (1, 2)]
    flight = Flight(runs, future, limit=0, sent=0.0)
    ex.inflight[flight.key] = flight
    events = ex._failed_future(flight)
    assert future.released and flight.key not in ex.inflight
    return events, ex


def test_a_future_lost_with_its_worker_is_killed_not_an_error() -> None:
    # Dask marks a finished key "lost" when the worker holding its result dies: the
    # attempts ran, their results are gone; that is a worker death, not the task's error.
    events, ex = _ended("lost")
    assert [(e[0], e[1], e[2], e[4]) for e in events] == [
        ("outcome", 1, False, "killed"),
        ("outcome", 2, False, "killed"),
    ]
    assert events[0][6]["dask_future_status"] == "lost"
    assert ex.counters.lost_before_gather == 2


def test_a_future_that_raised_is_an_error_with_the_exception() -> None:
    events, _ = _ended("error", ValueError("bad input"))
    assert {e[4] for e in events} == {"error"}
    assert events[0][5] == "ValueError: bad input"


def test_a_cancelled_future_requeues_its_attempts() -> None:
    events, _ = _ended("cancelled")
    assert events == [("requeue", 1), ("requeue", 2)]
