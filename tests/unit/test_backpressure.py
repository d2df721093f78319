"""Backpressure decisions: quotas, whole-batch reservations, memory pressure hysteresis."""

from __future__ import annotations

import pytest

from oomguard.api.backpressure import Backpressure, MemoryPressure, PendingCounter, parse_quotas
from oomguard.errors import BackpressureError


def test_queue_full_refuses_whole_batch() -> None:
    bp = Backpressure(max_pending=100)
    with bp.reserve("default", 60, "j1"):
        pass
    with pytest.raises(BackpressureError) as info, bp.reserve("default", 41, "j2"):
        pass
    assert info.value.data["code"] == "queue_full"
    retry_after = info.value.data["retry_after"]
    assert isinstance(retry_after, (int, float)) and retry_after > 0
    assert bp.pending.total() == 60  # nothing of the refused batch counted
    with bp.reserve("default", 40, "j3"):
        pass
    assert bp.pending.total() == 100


def test_namespace_quota_is_separate_from_total() -> None:
    bp = Backpressure(max_pending=1000, namespace_quotas={"small": 10})
    with bp.reserve("small", 10, "j1"):
        pass
    with pytest.raises(BackpressureError) as info, bp.reserve("small", 1, "j2"):
        pass
    assert info.value.data["code"] == "namespace_quota"
    with bp.reserve("other", 500, "j3"):
        pass
    assert bp.pending.snapshot() == {"other": 500, "small": 10}


def test_failed_store_gives_reservation_back() -> None:
    bp = Backpressure(max_pending=10)
    with pytest.raises(RuntimeError), bp.reserve("default", 10, "j1"):
        raise RuntimeError("disk full")
    assert bp.pending.total() == 0


def test_sync_replaces_base_and_keeps_reservations_it_cannot_see_whole() -> None:
    counter = PendingCounter()
    with counter.lock:
        counter.hold("old", "a", 100)
    counter.written("old")
    mark = counter.begin_sync()
    with counter.lock:
        counter.hold("new", "a", 5)  # accepted while the store was being counted
    counter.written("new")
    counter.sync(mark, {"old": ("a", 40), "new": ("a", 5), "b": ("b", 0)})
    assert counter.total() == 45  # 60 of the first 100 finished; "new" counted once
    assert counter.namespace("a") == 45
    assert counter.namespace("b") == 0
    mark = counter.begin_sync()
    counter.sync(mark, {"old": ("a", 40), "new": ("a", 5)})
    assert counter.total() == 45


def test_sync_never_drops_a_reservation_still_being_written() -> None:
    # A big batch is being written in chunks while a sync counts the store: the store
    # shows part of it. Before, the sync subtracted the whole reservation, and the limit
    # could be passed (100,000 + 60,000 accepted against 100,000).
    bp = Backpressure(max_pending=100)
    counter = bp.pending
    with bp.reserve("default", 60, "big"):
        mark = counter.begin_sync()
        counter.sync(mark, {"big": ("default", 10)})  # 10 of its 60 rows written so far
        assert counter.total() == 60
        with pytest.raises(BackpressureError), bp.reserve("default", 60, "second"):
            pass
    mark = counter.begin_sync()
    counter.sync(mark, {"big": ("default", 60)})
    assert counter.total() == 60


def test_completion_frees_room() -> None:
    bp = Backpressure(max_pending=10)
    with bp.reserve("default", 10, "j1"):
        pass
    mark = bp.pending.begin_sync()
    bp.pending.sync(mark, {})  # all finished
    with bp.reserve("default", 10, "j2"):
        pass


def test_namespaces_are_bounded() -> None:
    bp = Backpressure(max_pending=None, namespace_quotas={"team": 5}, max_namespaces=2)
    with bp.reserve("a", 1, "j1"), bp.reserve("b", 1, "j2"):
        pass
    with pytest.raises(BackpressureError) as info, bp.reserve("c", 1, "j3"):
        pass
    assert info.value.data["code"] == "too_many_namespaces"
    with bp.reserve("a", 1, "j4"), bp.reserve("team", 1, "j5"):  # known, or with a quota
        pass
    mark = bp.pending.begin_sync()
    bp.pending.sync(mark, {"j2": ("b", 1)})  # every task of "a" finished
    with bp.reserve("c", 1, "j6"):
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
    with pytest.raises(BackpressureError) as info, bp.reserve("default", 1, "j"):
        pass
    assert info.value.data["code"] == "scheduler_memory_pressure"
    p.update(100)
    with bp.reserve("default", 1, "j"):
        pass


def test_bad_hysteresis_marks() -> None:
    with pytest.raises(ValueError):
        MemoryPressure(limit_bytes=1, high=0.5, low=0.6)


def test_parse_quotas() -> None:
    assert parse_quotas(["a=1", " b = 20"]) == {"a": 1, "b": 20}
    for bad in ("a", "=3", "a=x", "a=-1"):
        with pytest.raises(ValueError):
            parse_quotas([bad])
