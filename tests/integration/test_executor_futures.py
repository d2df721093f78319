"""oomguard.Executor against the concurrent.futures documentation, with real workers and
a real store: submit, map (timeout, chunksize, buffersize), wait, as_completed, cancel,
callbacks, shutdown; exceptions with their type and the remote traceback; a worker's
death fails only its own future."""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest

import oomguard
from oomguard.executor import RemoteTraceback

# Functions of this module travel by value, as a script's or a notebook's would.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.timeout(300)]


class Boom(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"boom {code}")
        self.code = code


def square(x: int) -> int:
    return x * x


def fail(code: int) -> int:
    raise Boom(code)


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def die(code: int) -> int:
    os._exit(code)


def refuse_to_load() -> object:
    raise ValueError("this answer cannot be loaded here")


class Unloadable:
    """A result that pickles in the worker and fails to load in the caller."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return refuse_to_load, ()


@pytest.fixture
def ex() -> Iterator[oomguard.Executor]:
    with oomguard.Executor(max_workers=2) as executor:
        yield executor


def test_submit_lambda_closure_and_importable(ex: oomguard.Executor) -> None:
    k = 7
    assert ex.submit(lambda x: x + k, 1).result(60) == 8
    assert ex.submit(square, 9).result(60) == 81
    assert ex.submit(pow, 2, exp=10).result(60) == 1024
    assert ex.submit(lambda: lambda y: y * 2).result(60)(4) == 8  # results by value too


def test_exception_type_attributes_and_remote_traceback(ex: oomguard.Executor) -> None:
    future = ex.submit(fail, 42)
    with pytest.raises(Boom) as info:
        future.result(60)
    assert info.value.code == 42
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in fail" in cause.tb and "Boom: boom 42" in cause.tb
    assert isinstance(future.exception(), Boom)


def test_map_in_order_with_chunks_and_buffer(ex: oomguard.Executor) -> None:
    assert list(ex.map(square, range(30))) == [x * x for x in range(30)]
    assert list(ex.map(square, range(100), chunksize=7)) == [x * x for x in range(100)]
    assert list(ex.map(pow, range(10), range(3), chunksize=2)) == [1, 1, 4]
    # Over one iterable each item is the one argument, a tuple too (sent as values).
    assert list(ex.map(len, [(1, 2), (3,), ()], chunksize=2)) == [2, 1, 0]
    out = ex.map(square, iter(range(50)), chunksize=4, buffersize=2)
    assert list(out) == [x * x for x in range(50)]


def test_map_reraises_at_its_place(ex: oomguard.Executor) -> None:
    it = ex.map(lambda x: x if x != 3 else fail(x), range(6), chunksize=2)
    assert [next(it), next(it), next(it)] == [0, 1, 2]
    with pytest.raises(Boom):
        next(it)


def test_map_timeout_counts_from_the_call(ex: oomguard.Executor) -> None:
    it = ex.map(nap, [5.0, 0.0])
    with pytest.raises(cf.TimeoutError):
        list(ex.map(nap, [5.0], timeout=0.5))
    assert list(it) == [5.0, 0.0]


def test_wait_first_exception_and_as_completed(ex: oomguard.Executor) -> None:
    slow = ex.submit(nap, 3.0)
    bad = ex.submit(fail, 1)
    both: list[cf.Future[Any]] = [slow, bad]
    done, not_done = cf.wait(both, timeout=60, return_when=cf.FIRST_EXCEPTION)
    assert bad in done and slow in not_done
    futures = [ex.submit(square, i) for i in range(10)]
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=60)) == [
        i * i for i in range(10)
    ]
    assert slow.result(60) == 3.0


def test_callbacks_after_completion_run_at_once(ex: oomguard.Executor) -> None:
    future = ex.submit(square, 3)
    assert future.result(60) == 9
    seen: list[int] = []
    future.add_done_callback(lambda f: seen.append(f.result()))
    assert seen == [9]


def test_an_answer_that_cannot_be_loaded_fails_only_its_future(ex: oomguard.Executor) -> None:
    """The answer is loaded on the executor's side as the call's end is told: failing to
    load it fails that future with why, and the executor goes on."""
    seen: list[cf.Future[Unloadable]] = []
    future = ex.submit(Unloadable)
    future.add_done_callback(seen.append)
    with pytest.raises(ValueError, match="cannot be loaded here"):
        future.result(60)
    assert ex.submit(square, 6).result(60) == 36
    assert seen == [future]


def test_done_callbacks_run_off_the_scheduler_thread(ex: oomguard.Executor) -> None:
    """A future's answer is settled on the scheduler's thread, but one with done callbacks
    by the collector: a callback may take long (joblib pickles and submits its next batch
    from one) and must not hold up the loop."""
    names: list[str] = []
    futures = [ex.submit(square, i) for i in range(20)]
    for future in futures:
        future.add_done_callback(lambda f: names.append(threading.current_thread().name))
    assert [f.result(60) for f in futures] == [i * i for i in range(20)]
    deadline = time.monotonic() + 60
    while len(names) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)  # a callback runs just after its future's waiters are woken
    assert len(names) == 20
    assert "oomguard-scheduler" not in names


def test_cancel_of_a_pending_future() -> None:
    with oomguard.Executor(max_workers=1) as ex:
        first = ex.submit(nap, 2.0)
        pending = ex.submit(square, 2)
        assert pending.cancel()
        assert pending.cancelled()
        assert first.result(60) == 2.0
        with pytest.raises(cf.CancelledError):
            pending.result()


def test_shutdown_cancel_futures_and_submit_after_shutdown() -> None:
    ex = oomguard.Executor(max_workers=1)
    first = ex.submit(nap, 1.0)
    rest = [ex.submit(square, i) for i in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in rest)
    assert first.done()
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


def test_a_worker_death_fails_only_its_future(ex: oomguard.Executor) -> None:
    futures = [ex.submit(die, 3) if i == 7 else ex.submit(square, i) for i in range(20)]
    for i, future in enumerate(futures):
        if i == 7:
            err = future.exception(120)
            assert isinstance(err, oomguard.WorkerDiedError)
            assert isinstance(err, oomguard.OomguardError)
            assert err.failure_class in ("crashed", "killed")
            assert len(err.attempts) >= 1
        else:
            assert future.result(120) == i * i
    assert list(ex.map(square, range(5))) == [0, 1, 4, 9, 16]  # and it goes on


def test_5000_calls_settle_each_with_its_own_answer() -> None:
    """Many calls in a burst: stored a burst at a time, settled as the scheduler tells of
    their ends (results, a raised exception, a death), none lost, none mixed up."""
    with oomguard.Executor(max_workers=2) as ex:
        futures = [ex.submit(square, i) for i in range(5000)]
        raised = ex.submit(fail, 5)
        died = ex.submit(die, 3)
        _done, not_done = cf.wait([*futures, raised, died], timeout=240)
        assert not not_done
        assert [f.result() for f in futures] == [i * i for i in range(5000)]
        err = raised.exception()
        assert isinstance(err, Boom) and err.code == 5
        assert isinstance(died.exception(), oomguard.WorkerDiedError)
        assert ex.submit(square, 12).result(60) == 144  # and it goes on


def count_init(name: str) -> None:
    os.environ[name] = str(int(os.environ.get(name, "0")) + 1)


def inits(_x: int) -> tuple[int, str]:
    return os.getpid(), os.environ.get("OOMGUARD_TEST_INITS", "")


def test_the_initializer_runs_once_in_each_worker_before_its_calls() -> None:
    """Pickled once with the executor, run once by each worker before its first call,
    submitted or in a map chunk."""
    with oomguard.Executor(
        max_workers=2, initializer=count_init, initargs=("OOMGUARD_TEST_INITS",)
    ) as ex:
        seen = [f.result(60) for f in [ex.submit(inits, i) for i in range(20)]]
        seen += list(ex.map(inits, range(300), chunksize=16))
    assert {count for _pid, count in seen} == {"1"}
    assert os.environ.get("OOMGUARD_TEST_INITS") is None  # run in the workers only


def die_at(x: int) -> int:
    if x == 5:
        os._exit(3)
    return x


def test_a_map_chunk_whose_worker_dies_fails_at_its_place() -> None:
    """A chunk is one task: a death inside it fails that chunk (after the death retries),
    map yields what came before it and raises there; the executor goes on."""
    with oomguard.Executor(max_workers=2) as ex:
        it = ex.map(die_at, range(12), chunksize=4)
        assert [next(it) for _ in range(4)] == [0, 1, 2, 3]
        with pytest.raises(oomguard.WorkerDiedError) as info:
            next(it)
        assert info.value.failure_class in ("crashed", "killed")
        assert list(ex.map(square, range(6), chunksize=4)) == [0, 1, 4, 9, 16, 25]
