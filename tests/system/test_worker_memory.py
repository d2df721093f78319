"""Real workers in real memory cgroups: memory an attempt freed is kept for the next one
and given back only where it is needed (worker/hygiene.py, ARCHITECTURE "Worker memory")."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from fixtures.polling import wait_for
from oomguard.cgroups.detect import detect_isolation
from oomguard.worker.calls import JsonCall
from oomguard.worker.hygiene import IDLE_TRIM_S
from oomguard.worker.messages import Idle, Message, Outcome, Refused
from oomguard.worker.pool import PoolConfig, Worker, WorkerPool

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

MiB = 1024**2
_ids = itertools.count(1)


@pytest.fixture
def pool(require_cgroup: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerPool]:
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setenv("PYTHONPATH", tests + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = WorkerPool(PoolConfig(workers=1, isolation=detect_isolation()))
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _item(fn: str, **params: Any) -> JsonCall:
    return JsonCall(next(_ids), f"fixtures.tasks:{fn}", json.dumps(params))


def _run(
    pool: WorkerPool, worker: Worker, limit: int | None, item: JsonCall, clean: bool = False
) -> list[Message]:
    """Send one attempt under ``limit``; its messages up to the worker's idle."""
    pool.set_limit(worker, limit)
    pool.send(worker, [item], clean=clean)
    messages: list[Message] = []

    def idle() -> bool:
        got, died = pool.poll(0.1)
        assert not died, "the worker died"
        messages.extend(msg for _w, msg in got)
        return any(isinstance(m, Idle) for m in messages)

    assert wait_for(idle, timeout=60)
    return messages


def _outcome(messages: list[Message]) -> Outcome:
    return next(m for m in messages if isinstance(m, Outcome))


def _result(messages: list[Message]) -> Any:
    import pickle

    outcome = _outcome(messages)
    assert outcome.ok, f"the attempt failed: {outcome.message}"
    assert outcome.payload is not None
    return pickle.loads(outcome.payload)


def _leave_200_mib(pool: WorkerPool, worker: Worker) -> int:
    _run(pool, worker, 2048 * MiB, _item("rss_now"))  # numpy-free floor, modules loaded
    floor: int = _result(_run(pool, worker, 2048 * MiB, _item("rss_now")))
    held = _result(_run(pool, worker, 2048 * MiB, _item("leave_freed", mib=200)))
    assert held - floor > 150 * MiB
    return floor


def test_memory_freed_by_an_attempt_is_kept_for_the_next_when_there_is_room(
    pool: WorkerPool,
) -> None:
    worker = pool.idle_workers()[0]
    floor = _leave_200_mib(pool, worker)
    # 2 GiB leaves 400 MiB of headroom: nothing is given back, nothing faulted in again.
    messages = _run(pool, worker, 2048 * MiB, _item("rss_now"))
    assert _result(messages) - floor > 150 * MiB
    # It ran within what the last one left.
    assert _outcome(messages).evidence.get("peak_bound") is True


def test_memory_is_given_back_before_an_attempt_whose_headroom_it_would_take(
    pool: WorkerPool,
) -> None:
    worker = pool.idle_workers()[0]
    floor = _leave_200_mib(pool, worker)
    # 512 MiB leaves about 100 MiB of headroom, less than the 200 MiB held: trimmed first.
    assert _result(_run(pool, worker, 512 * MiB, _item("rss_now"))) - floor < 50 * MiB


def test_a_probe_runs_clean_even_with_room(pool: WorkerPool) -> None:
    worker = pool.idle_workers()[0]
    floor = _leave_200_mib(pool, worker)
    messages = _run(pool, worker, 2048 * MiB, _item("rss_now"), clean=True)
    assert _result(messages) - floor < 50 * MiB
    assert "peak_bound" not in _outcome(messages).evidence


def test_an_idle_worker_gives_its_memory_back(pool: WorkerPool) -> None:
    worker = pool.idle_workers()[0]
    floor = _leave_200_mib(pool, worker)
    proc = psutil.Process(worker.pid)
    assert wait_for(lambda: proc.memory_info().rss - floor < 50 * MiB, timeout=IDLE_TRIM_S + 5)


def test_the_worker_lowers_its_own_limit_after_giving_memory_back(pool: WorkerPool) -> None:
    worker = pool.idle_workers()[0]
    _leave_200_mib(pool, worker)
    assert worker.cgroup is not None
    # Below what the cgroup holds (v1 would refuse the scheduler's write with EBUSY): the
    # worker trims, then lowers its limit, then runs the attempt under it.
    messages = _run(pool, worker, 160 * MiB, _item("rss_now"))
    assert _result(messages) > 0
    assert worker.cgroup.counters().limit_bytes == 160 * MiB
    assert not [m for m in messages if isinstance(m, Refused)]


def test_a_limit_below_what_the_worker_keeps_alive_is_refused_and_nothing_runs(
    pool: WorkerPool,
) -> None:
    worker = pool.idle_workers()[0]
    _result(_run(pool, worker, 2048 * MiB, _item("keep_alive", mib=300)))
    item = _item("rss_now")
    messages = _run(pool, worker, 128 * MiB, item)
    refused = [m for m in messages if isinstance(m, Refused)]
    assert refused and refused[0].attempt_ids == (item.attempt_id,)
    assert not [m for m in messages if isinstance(m, Outcome)]  # nothing of the batch ran
    last = messages[-1]
    assert isinstance(last, Idle) and last.recycle == "limit_change"
    assert not worker.inflight
