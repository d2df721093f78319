"""Admission and what memory keys are known to need: pure logic, no processes."""

from __future__ import annotations

from oomguard.scheduler.admission import (
    MIB,
    SIBLING_FACTOR,
    Admission,
    Estimates,
    KeyState,
    Placement,
    Role,
    escalate,
)

GIB = 1024 * MIB


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _start(
    adm: Admission, attempt: int, key: str, state: KeyState, estimate: int, idle: int = 1
) -> Placement | None:
    placement = adm.place(attempt, key, state, estimate, idle)
    if placement is not None:
        adm.start(attempt, placement.limit, key, placement.role)
    return placement


def test_small_tasks_pack_into_the_budget() -> None:
    adm = Admission(budget=2 * GIB, cap=2 * GIB)
    limit = adm.limit_for(100 * MIB)
    assert limit == 164 * MIB  # 64 MiB minimum headroom
    started = 0
    for attempt in range(100):
        if _start(adm, attempt, "k", KeyState.KNOWN, 100 * MIB) is None:
            break
        started += 1
    assert started == (2 * GIB) // limit
    assert adm.total <= adm.budget


def test_a_task_alone_may_take_the_whole_cap() -> None:
    adm = Admission(budget=2 * GIB, cap=2 * GIB)
    assert adm.limit_for(4 * GIB) == 2 * GIB
    placement = adm.place(1, "big", KeyState.KNOWN, 4 * GIB)
    assert placement is not None and placement.limit == 2 * GIB


def test_unknown_key_runs_one_probe_and_siblings_only_with_generous_limits() -> None:
    adm = Admission(budget=8 * GIB, cap=8 * GIB)
    probe = _start(adm, 1, "new", KeyState.UNKNOWN, 512 * MIB, idle=2)
    assert probe is not None and probe.role is Role.PROBE and probe.limit == 640 * MIB
    # Beside the probe a task of the key gets all the room one idle worker may have...
    sibling = _start(adm, 2, "new", KeyState.UNKNOWN, 512 * MIB, idle=1)
    assert sibling is not None and sibling.role is Role.SIBLING
    assert sibling.limit == SIBLING_FACTOR * probe.limit  # generous, not the whole budget
    # ... and never a limit short of SIBLING_FACTOR times the probe's: it waits.
    tight = Admission(budget=1536 * MIB, cap=1536 * MIB)
    _start(tight, 1, "new", KeyState.UNKNOWN, 64 * MIB, idle=4)
    assert tight.place(2, "new", KeyState.UNKNOWN, 64 * MIB, idle=3) is None
    # Other keys are not held up by the probe.
    other = tight.place(3, "other", KeyState.UNKNOWN, 64 * MIB, idle=3)
    assert other is not None and other.role is Role.PROBE
    tight.end(1, "new", was_probe=True)
    again = tight.place(2, "new", KeyState.UNKNOWN, 64 * MIB, idle=3)
    assert again is not None and again.role is Role.PROBE


def test_learning_key_runs_one_cap_probe_with_room_reserved() -> None:
    adm = Admission(budget=2 * GIB, cap=2 * GIB)
    _start(adm, 100, "small", KeyState.KNOWN, 200 * MIB)
    # The cap probe does not fit beside the small task: it waits, with room reserved.
    assert adm.place(7, "big", KeyState.LEARNING, 0) is None
    assert adm.reserved_for() == 7
    assert adm.place(8, "small", KeyState.KNOWN, 200 * MIB) is None  # nothing jumps it
    assert adm.place(9, "big", KeyState.LEARNING, 0) is None  # one cap probe per key
    adm.end(100, "small", was_probe=False)
    cap_probe = _start(adm, 7, "big", KeyState.LEARNING, 0)
    assert cap_probe is not None and cap_probe.role is Role.CAP_PROBE
    assert cap_probe.limit == 2 * GIB
    assert adm.reserved_for() is None
    assert adm.place(9, "big", KeyState.LEARNING, 0) is None  # waits for what it learns
    adm.end(7, "big", was_probe=True)
    assert adm.place(9, "big", KeyState.LEARNING, 0) is not None


def test_starving_task_gets_room_reserved_after_the_wait() -> None:
    clock = Clock()
    adm = Admission(budget=2 * GIB, cap=2 * GIB, starvation_wait=10.0, clock=clock)
    adm.start(100, 1 * GIB, "small", Role.NORMAL)
    big = 1200 * MIB  # limit 1500 MiB: does not fit beside 1 GiB
    assert adm.place(7, "big", KeyState.KNOWN, big) is None  # waits
    # Small tasks still fill the room while the big one has waited less than the bound.
    assert adm.place(8, "small", KeyState.KNOWN, 150 * MIB) is not None
    clock.now = 11.0
    assert adm.reserved_for() == 7
    assert adm.place(9, "small", KeyState.KNOWN, 150 * MIB) is None  # room is reserved
    adm.end(100, "small", was_probe=False)
    assert adm.place(7, "big", KeyState.KNOWN, big) is not None
    assert adm.reserved_for() is None


def test_forget_drops_a_waiting_task() -> None:
    clock = Clock()
    adm = Admission(budget=GIB, cap=GIB, starvation_wait=1.0, clock=clock)
    adm.start(1, GIB, "a", Role.NORMAL)
    assert adm.place(2, "a", KeyState.KNOWN, GIB) is None
    assert adm.place(3, "b", KeyState.LEARNING, 0) is None
    adm.forget(2)
    adm.forget(3)
    clock.now = 5
    assert adm.reserved_for() is None
    assert not adm.cap_waits


def test_escalation_at_least_doubles_and_exceeds_the_peak() -> None:
    assert escalate(640 * MIB, 640 * MIB, 512 * MIB) == 1280 * MIB
    assert escalate(100 * MIB, 900 * MIB, 0) == 1350 * MIB
    assert escalate(None, None, 0) >= 16 * MIB


def test_estimates_learn_a_margin_from_the_spread_and_persist_as_rows() -> None:
    est = Estimates(default=512 * MIB)
    assert est.get("k") == (512 * MIB, False)
    assert est.state("k") is KeyState.UNKNOWN
    est.learn("k", 100 * MIB)
    value, learned = est.get("k")
    assert learned and value == int(100 * MIB * 1.1)  # one peak: a 10 % margin
    assert est.state("k") is KeyState.KNOWN
    est.learn("k", 60 * MIB)
    # Peaks 60 and 100 MiB: mean 80, spread 20; 3 spreads above the largest peak.
    assert est.get("k")[0] == 160 * MIB
    rows = est.take_dirty()
    assert [(r.memory_key, r.bytes, r.peak_bytes, r.samples) for r in rows] == [
        ("k", 160 * MIB, 100 * MIB, 2)
    ]
    assert est.take_dirty() == []


def test_declared_estimate_is_a_hint_and_a_floor() -> None:
    est = Estimates(default=512 * MIB)
    assert est.estimate("k", 64 * MIB) == 64 * MIB  # unknown key: the declaration
    est.learn("k", 40 * MIB)
    assert est.estimate("k", 64 * MIB) == 64 * MIB  # learned smaller: the declaration stays
    est.killed("k", 128 * MIB, 120 * MIB, 2 * GIB, "attempt 1")
    # Killed at 128 MiB: the declaration of 64 MiB is replaced, for every task of the key.
    assert est.estimate("k", 64 * MIB) >= 256 * MIB
    assert est.state("k") is KeyState.LEARNING


def test_a_kill_below_the_cap_is_knowledge_for_the_key_and_one_success_learns_it() -> None:
    est = Estimates(default=64 * MIB)
    cap = 1536 * MIB
    assert est.killed("k", 128 * MIB, 127 * MIB, cap, "attempt 3") is KeyState.LEARNING
    assert est.estimate("k", None) >= 256 * MIB
    est.learn("k", 700 * MIB)  # the cap probe's peak
    assert est.state("k") is KeyState.KNOWN
    assert est.estimate("k", 64 * MIB) == int(700 * MIB * 1.1)
    # A peak below the limit that killed the key never brings the estimate under it.
    est2 = Estimates(default=64 * MIB)
    est2.killed("k", 512 * MIB, None, cap, "attempt 1")
    est2.learn("k", 100 * MIB)
    assert est2.estimate("k", None) >= 512 * MIB


def test_a_kill_at_the_cap_ends_the_key_until_the_cap_grows() -> None:
    est = Estimates(default=64 * MIB)
    cap = 1536 * MIB
    est.killed("k", 128 * MIB, None, cap, "attempt 1")
    assert est.killed("k", cap, cap, cap, "attempt 9 was OOM-killed") is KeyState.UNFIT
    assert "attempt 9" in est.proof("k")
    stored = {r.memory_key: r for r in est.take_dirty()}
    same = Estimates(default=64 * MIB)
    same.load(stored, cap)
    assert same.state("k") is KeyState.UNFIT  # a later job at the same cap: still unfit
    larger = Estimates(default=64 * MIB)
    larger.load(stored, 4 * cap)
    # A larger cap tries again: with the cap, as after a kill below it.
    assert larger.state("k") is KeyState.LEARNING
    assert larger.estimate("k", None) > 128 * MIB


def test_a_replica_learns_what_another_taught_unless_it_knows_more() -> None:
    cap = 1536 * MIB
    taught = Estimates(default=64 * MIB)
    for peak in (300, 310, 320):
        taught.learn("k", peak * MIB)
    taught.learn("mine", 100 * MIB)
    shared = {r.memory_key: r for r in taught.take_dirty()}  # as the store holds them
    other = Estimates(default=64 * MIB)
    other.load({}, cap)
    other.learn("mine", 200 * MIB)  # its own news of "mine", not yet stored
    assert other.learn_shared(shared) == 1
    assert other.estimate("k", None) == taught.estimate("k", None)  # a key it did not know
    assert other.estimate("mine", None) >= 200 * MIB  # its unstored news is kept
    assert other.learn_shared(shared) == 0  # nothing newer the second time
