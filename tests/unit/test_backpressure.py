"""Backpressure decisions: quotas, whole-batch reservations, memory pressure hysteresis."""

from __future__ import annotations

import pytest

from oomguard.api.backpressure import Backpressure, MemoryPressure, PendingCounter, parse_quotas
from oomguard.errors import BackpressureError


def test_queue_full_refuses_whole_batch() -> None:
    bp = Backpressure(max_pending=100)
    with bp.reserve("default", 60):
        pass
    with pytest.raises(BackpressureError) as info, bp.reserve("default", 41):
        pass
    assert info.value.data["code"] == "queue_full"
    assert info.value.data["retry_after"] > 0
    assert bp.pending.total() == 60  # nothing of the refused batch counted
    with bp.reserve("default", 40):
        pass
    assert bp.pending.total() == 100


def test_namespace_quota_is_separate_from_total() -> None:
    bp = Backpressure(max_pending=1000, namespace_quotas={"small": 10})
    with bp.reserve("small", 10):
        pass
    with pytest.raises(BackpressureError) as info, bp.reserve("small", 1):
        pass
    assert info.value.data["code"] == "namespace_quota"
    with bp.reserve("other", 500):
        pass
    assert bp.pending.snapshot() == {"other": 500, "small": 10}


def test_failed_store_gives_reservation_back() -> None:
    bp = Backpressure(max_pending=10)
    with pytest.raises(RuntimeError), bp.reserve("default", 10):
        raise RuntimeError("disk full")
    assert bp.pending.total() == 0


def test_sync_replaces_base_and_keeps_accepts_made_during_sync() -> None:
    counter = PendingCounter()
    counter.add("a", 100)
    counter.begin_sync()
    counter.add("a", 5)  # accepted while the store was being counted
    counter.sync({"a": 40, "b": 0})  # 60 of the first 100 finished
    assert counter.total() == 45
    assert counter.namespace("a") == 45
    assert counter.namespace("b") == 0
    counter.begin_sync()
    counter.sync({"a": 45})
    assert counter.total() == 45


def test_completion_frees_room() -> None:
    bp = Backpressure(max_pending=10)
    with bp.reserve("default", 10):
        pass
    bp.pending.begin_sync()
    bp.pending.sync({})  # all finished
    with bp.reserve("default", 10):
        pass


def test_memory_pressure_hysteresis() -> None:
    p = MemoryPressure(limit_bytes=1000, high=0.8, low=0.7)
    assert not p.update(500)
    assert p.update(800)  # at the high-water mark: on
    assert p.update(750)  # between the marks: stays on
    assert not p.update(699)  # under the low mark: off
    assert not p.update(790)  # between the marks: stays off
    assert p.peak_rss == 800


def test_pressure_refuses_with_its_code() -> None:
    p = MemoryPressure(limit_bytes=1000)
    bp = Backpressure(max_pending=None, pressure=p)
    p.update(900)
    with pytest.raises(BackpressureError) as info, bp.reserve("default", 1):
        pass
    assert info.value.data["code"] == "scheduler_memory_pressure"
    p.update(100)
    with bp.reserve("default", 1):
        pass


def test_bad_hysteresis_marks() -> None:
    with pytest.raises(ValueError):
        MemoryPressure(limit_bytes=1, high=0.5, low=0.6)


def test_parse_quotas() -> None:
    assert parse_quotas(["a=1", " b = 20"]) == {"a": 1, "b": 20}
    for bad in ("a", "=3", "a=x", "a=-1"):
        with pytest.raises(ValueError):
            parse_quotas([bad])
