"""Replicates' results held on the Dask worker that made them (executors/dask/held.py and
executors/dask/remote/held.py)."""

from __future__ import annotations

from oomguard.executors.dask.held import HeldIndex
from oomguard.executors.dask.remote.answers import GroupAnswer, Outcome
from oomguard.executors.dask.remote.held import HeldResults, refers
from oomguard.worker.calls import AggregateCall, HeldRef, JsonCall

MIB = 1024 * 1024


def outcome(attempt_id: int, payload: bytes | None = b"r", ok: bool = True) -> Outcome:
    return Outcome(attempt_id, ok, payload)


def answer(*outcomes: Outcome, held: tuple[int, ...], dropped: tuple[int, ...] = ()) -> GroupAnswer:
    return GroupAnswer("tcp://any", 1, outcomes, held=held, dropped=dropped)


def test_a_worker_holds_what_is_asked_and_drops_the_oldest_beyond_its_room() -> None:
    held = HeldResults()
    items = [JsonCall(i, "m:f", None, hold=i != 3) for i in range(1, 5)]
    outs = [outcome(1, b"a" * MIB), outcome(2, b"b" * MIB), outcome(3), outcome(4, ok=False)]
    assert held.keep(items, outs, room=8 * MIB) == [1, 2]  # 3 not asked, 4 failed
    assert (len(held), held.bytes) == (2, 2 * MIB)
    held.fit(MIB)
    assert held.take_dropped() == [1] and held.take_dropped() == []
    assert (len(held), held.bytes) == (1, MIB)


def test_an_item_gets_its_held_results_once_and_nothing_is_taken_when_one_is_missing() -> None:
    held = HeldResults()
    held.keep([JsonCall(1, "m:f", None, hold=True)], [outcome(1, b"one")], room=MIB)
    held.keep([JsonCall(2, "m:f", None, hold=True)], [outcome(2, b"two")], room=MIB)
    agg = AggregateCall(9, "m:g", None, (HeldRef(1), b"stored", HeldRef(2)))
    plain = JsonCall(8, "m:f", None)
    assert refers(agg) and not refers(plain)
    missing = AggregateCall(10, "m:g", None, (HeldRef(1), HeldRef(7)))
    assert held.resolve([missing]) is None
    assert len(held) == 2  # nothing taken
    resolved = held.resolve([agg, plain])
    assert resolved is not None and resolved[1] is plain
    (filled, _) = resolved
    assert isinstance(filled, AggregateCall) and filled.results == (b"one", b"stored", b"two")
    assert agg.results == (HeldRef(1), b"stored", HeldRef(2))  # the item itself is unchanged
    assert len(held) == 0 and held.bytes == 0
    used = AggregateCall(11, "m:g", None, (HeldRef(1),))
    assert held.resolve([used]) is None  # used once


def test_the_index_sends_an_aggregation_where_most_of_its_inputs_are_held() -> None:
    index = HeldIndex()
    index.saw("tcp://a", answer(outcome(1, b"x" * 10), outcome(2, b"x" * 10), held=(1, 2)))
    index.saw("tcp://b", answer(outcome(3, b"x" * 30), held=(3,)))
    index.saw("tcp://a", answer(outcome(4, b"x"), held=(4,), dropped=(4,)))
    assert len(index) == 3  # 4 was dropped by its worker
    # b holds 30 bytes of them, a 20: b gets it, and all three are sent by reference;
    # b takes 1 and 2 from a, where they are held.
    assert index([1, 2, 3, None]) == ("tcp://b", {1, 2, 3})
    agg = AggregateCall(9, "m:g", None, (HeldRef(1), HeldRef(2), HeldRef(3), b"stored"))
    assert index.peers([JsonCall(8, "m:f", None), agg]) == {
        1: "tcp://a",
        2: "tcp://a",
        3: "tcp://b",
    }
    assert index.peers([agg]) == {}  # told once
    assert index([3]) == (None, set())  # each held result is sent for once
    index.saw("tcp://a", answer(outcome(5), held=(5,)))
    index.forget_workers_except(["tcp://b"])  # a is gone (restarted, removed)
    assert index([5]) == (None, set())


def test_a_worker_hands_over_the_results_it_holds_once() -> None:
    held = HeldResults()
    items = [JsonCall(i, "m:f", None, hold=True) for i in (1, 2)]
    held.keep(items, [outcome(1, b"one"), outcome(2, b"two")], room=MIB)
    assert held.take([2, 7]) == {2: b"two"}  # 7 is not held here
    assert (len(held), held.bytes) == (1, 3)
    assert held.take([2]) == {}
