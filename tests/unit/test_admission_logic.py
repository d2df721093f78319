"""Admission and estimates: pure logic, no processes."""

from __future__ import annotations

from oomguard.scheduler.admission import MIB, Admission, Estimates, escalate

GIB = 1024 * MIB


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_small_tasks_pack_into_the_budget() -> None:
    adm = Admission(budget=2 * GIB, cap=2 * GIB)
    limit = adm.limit_for(100 * MIB)
    assert limit == 164 * MIB  # 64 MiB minimum headroom
    started = 0
    for attempt in range(100):
        if not adm.try_admit(attempt, limit, "k", learned=True):
            break
        adm.start(attempt, limit, "k", learned=True)
        started += 1
    assert started == (2 * GIB) // limit
    assert adm.total <= adm.budget


def test_a_task_alone_may_take_the_whole_cap() -> None:
    adm = Admission(budget=2 * GIB, cap=2 * GIB)
    assert adm.limit_for(4 * GIB) == 2 * GIB
    assert adm.try_admit(1, 2 * GIB, "big", learned=True)


def test_unknown_key_runs_one_probe_at_a_time() -> None:
    adm = Admission(budget=8 * GIB, cap=8 * GIB)
    assert adm.try_admit(1, 512 * MIB, "new", learned=False)
    adm.start(1, 512 * MIB, "new", learned=False)
    assert not adm.try_admit(2, 512 * MIB, "new", learned=False)
    assert adm.try_admit(3, 512 * MIB, "other", learned=False)
    adm.end(1, "new", was_probe=True)
    assert adm.try_admit(2, 512 * MIB, "new", learned=False)


def test_starving_task_gets_room_reserved_after_the_wait() -> None:
    clock = Clock()
    adm = Admission(budget=2 * GIB, cap=2 * GIB, starvation_wait=10.0, clock=clock)
    adm.start(100, 1 * GIB, "small", learned=True)
    big = 1536 * MIB
    assert not adm.try_admit(7, big, "big", learned=True)  # does not fit: waits
    # Small tasks still fill the room while the big one has waited less than the bound.
    assert adm.try_admit(8, 256 * MIB, "small", learned=True)
    clock.now = 11.0
    assert adm.reserved_for() == 7
    assert not adm.try_admit(9, 256 * MIB, "small", learned=True)  # room is reserved
    adm.end(100, "small", was_probe=False)
    assert adm.try_admit(7, big, "big", learned=True)
    assert adm.reserved_for() is None


def test_forget_drops_a_waiting_task() -> None:
    clock = Clock()
    adm = Admission(budget=GIB, cap=GIB, starvation_wait=1.0, clock=clock)
    adm.start(1, GIB, "a", learned=True)
    assert not adm.try_admit(2, GIB, "a", learned=True)
    adm.forget(2)
    clock.now = 5
    assert adm.reserved_for() is None


def test_escalation_at_least_doubles_and_exceeds_the_peak() -> None:
    assert escalate(640 * MIB, 640 * MIB, 512 * MIB) == 1280 * MIB
    assert escalate(100 * MIB, 900 * MIB, 0) == 1350 * MIB
    assert escalate(None, None, 0) >= 16 * MIB


def test_estimates_learn_with_margin_and_persist_as_rows() -> None:
    est = Estimates(default=512 * MIB)
    assert est.get("k") == (512 * MIB, False)
    est.learn("k", 100 * MIB)
    est.learn("k", 80 * MIB)
    value, learned = est.get("k")
    assert learned and value == int(100 * MIB * 1.2)
    rows = est.take_dirty()
    assert rows == [("k", value, 100 * MIB, 2)]
    assert est.take_dirty() == []
    est.raise_to("k", 2 * GIB, 900 * MIB)
    assert est.get("k")[0] == 2 * GIB
