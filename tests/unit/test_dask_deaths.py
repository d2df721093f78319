"""classify_dask_death: one row per class a Dask worker's death can get, from the nanny's record."""

from __future__ import annotations

from typing import Any

import pytest

from oomguard.cgroups.cgroup import CgroupCounters
from oomguard.diagnosis.classify import NEAR_LIMIT
from oomguard.executors.dask.deaths import classify_dask_death
from oomguard.executors.dask.remote.answers import DeathRecord
from oomguard.jobs.model import FailureClass
from oomguard.kernlog import OomEvent

MiB = 1024 * 1024
LIMIT = 512 * MiB
ADDRESS = "tcp://127.0.0.1:40001"
WORKER_CG = "/kubepods/pod1/worker"


def counters(oom_kill: int, oom: int | None = None, *, v1: bool = False) -> dict[str, Any]:
    """The nanny's counters: CgroupCounters.to_json() plus where they were read. ``oom``
    rises with ``oom_kill`` unless given; v1 has no ``oom`` counter."""
    if v1:
        oom = None
    elif oom is None:
        oom = oom_kill
    c = CgroupCounters(oom, oom_kill, 100 * MiB, 400 * MiB, LIMIT).to_json()
    return dict(c, path="/sys/fs/cgroup" + WORKER_CG, version=1 if v1 else 2)


def kernel(**fields: Any) -> dict[str, Any]:
    return OomEvent(victim_pid=4242, **fields).to_json()


def record(**fields: Any) -> dict[str, Any]:
    """A death record as NannyEvidencePlugin._died publishes it."""
    base: dict[str, Any] = {
        "pid": 4242,
        "start_time": 99,
        "worker": ADDRESS,
        "counters_before": counters(0),
        "counters_after": counters(0),
        "rss": 100 * MiB,
        "peak_rss": 300 * MiB,
        "exitcode": -9,
        "memory_limit": LIMIT,
        "nanny_terminated": False,
        "kernel_log": None,
        "progress": None,
    }
    base.update(fields)
    return base


def _typed(rec: dict[str, Any] | None) -> DeathRecord | None:
    """The record as the executor reads it from the scheduler event."""
    return None if rec is None else DeathRecord.from_json(rec)


ROWS: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None, FailureClass]] = [
    (
        "kernel: global OOM",
        record(kernel=kernel(oom_type="global", constraint="CONSTRAINT_NONE")),
        None,
        FailureClass.OOM_SYSTEM,
    ),
    (
        "kernel: 3.x global, no constraint line",
        record(kernel=kernel(oom_type="global")),
        None,
        FailureClass.OOM_SYSTEM,
    ),
    (
        "kernel: CONSTRAINT_NONE only",
        record(kernel=kernel(constraint="CONSTRAINT_NONE")),
        None,
        FailureClass.OOM_SYSTEM,
    ),
    (
        "kernel: the worker's memcg",
        record(
            kernel=kernel(oom_type="memcg", oom_memcg=WORKER_CG, task_memcg=WORKER_CG),
            counters_after=counters(1),
        ),
        None,
        FailureClass.OOM_CGROUP,
    ),
    (
        "kernel: a parent's memcg (pod limit)",
        record(
            kernel=kernel(oom_type="memcg", oom_memcg="/kubepods/pod1", task_memcg=WORKER_CG),
            counters_after=counters(1),
        ),
        None,
        FailureClass.OOM_ANCESTOR,
    ),
    (
        "kernel: memcg, the same cgroup written with a trailing slash",
        record(kernel=kernel(oom_type="memcg", oom_memcg=WORKER_CG + "/", task_memcg=WORKER_CG)),
        None,
        FailureClass.OOM_CGROUP,
    ),
    ("counter rose, SIGKILL", record(counters_after=counters(1)), None, FailureClass.OOM_CGROUP),
    (
        "v2: oom_kill rose, oom did not (a parent's limit)",
        record(counters_after=counters(1, oom=0)),
        None,
        FailureClass.OOM_ANCESTOR,
    ),
    (
        "v1: oom_kill rose (no oom counter)",
        record(
            counters_before=counters(0, v1=True),
            counters_after=counters(1, v1=True),
        ),
        None,
        FailureClass.OOM_CGROUP,
    ),
    (
        "counter rose, but died of SIGSEGV",
        record(counters_after=counters(1), exitcode=-11),
        None,
        FailureClass.CRASHED,
    ),
    (
        "the nanny's memory-limit restart",
        record(exitcode=-15, peak_rss=None),
        {"pid": 4242, "rss": 600 * MiB},
        FailureClass.OOM_WATCHDOG,
    ),
    (
        "the nanny terminated it",
        record(exitcode=-15, nanny_terminated=True),
        None,
        FailureClass.OOM_WATCHDOG,
    ),
    (
        "RSS near the limit at death",
        record(exitcode=-15, rss=int(NEAR_LIMIT * LIMIT) + 1),
        None,
        FailureClass.OOM_WATCHDOG,
    ),
    (
        "RSS near the limit given by the executor",
        record(exitcode=-15, rss=int(NEAR_LIMIT * LIMIT) + 1, memory_limit=None),
        None,
        FailureClass.OOM_WATCHDOG,
    ),
    ("SIGKILL, no evidence", record(), None, FailureClass.KILLED),
    (
        "SIGKILL, the kernel log unreadable",
        record(kernel_log="cannot read /dev/kmsg: Permission denied"),
        None,
        FailureClass.KILLED,
    ),
    ("no nanny record", None, None, FailureClass.KILLED),
    ("SIGSEGV", record(exitcode=-11), None, FailureClass.CRASHED),
    ("exited 1", record(exitcode=1), None, FailureClass.CRASHED),
    ("exited 0 with work in flight", record(exitcode=0), None, FailureClass.CRASHED),
]


@pytest.mark.parametrize(("row", "rec", "restart", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_classify_dask_death(
    row: str, rec: dict[str, Any] | None, restart: dict[str, Any] | None, expected: FailureClass
) -> None:
    fc, evidence, peak = classify_dask_death(
        pid=4242, address=ADDRESS, record=_typed(rec), nanny_restart=restart, memory_limit=LIMIT
    )
    assert fc is expected, row
    assert (evidence["executor"], evidence["worker"], evidence["pid"]) == ("dask", ADDRESS, 4242)
    assert evidence["worker_memory_limit"] == LIMIT
    if rec is None:
        nanny_record = evidence["nanny_record"]
        assert isinstance(nanny_record, str) and "no nanny" in nanny_record and peak is None
        assert "signal" not in evidence  # nothing says how it died
        return
    exitcode = rec["exitcode"]
    assert evidence["exitcode"] == exitcode
    if exitcode < 0:
        assert (evidence["signal"], evidence["exit_code"]) == (-exitcode, None)
    else:
        assert (evidence["signal"], evidence["exit_code"]) == (None, exitcode)
    assert evidence["pid_start_time"] == 99
    for key in ("counters_before", "counters_after", "kernel", "kernel_log"):
        assert evidence.get(key) == rec.get(key)
    if restart is not None:
        assert evidence["nanny_rss"] == restart["rss"] and peak == restart["rss"]
    else:
        assert peak == rec["peak_rss"]
    if fc is FailureClass.OOM_WATCHDOG:
        assert "killed_by" in evidence


def test_every_dask_death_class_has_a_row() -> None:
    assert {expected for *_, expected in ROWS} == {
        FailureClass.OOM_SYSTEM,
        FailureClass.OOM_CGROUP,
        FailureClass.OOM_ANCESTOR,
        FailureClass.OOM_WATCHDOG,
        FailureClass.KILLED,
        FailureClass.CRASHED,
    }


def test_a_parents_memcg_limit_is_oom_ancestor_as_for_local_workers() -> None:
    rec = record(
        kernel=kernel(oom_type="memcg", oom_memcg="/kubepods/pod1", task_memcg=WORKER_CG),
        counters_after=counters(1),
    )
    fc, _, _ = classify_dask_death(
        pid=4242, address=ADDRESS, record=_typed(rec), nanny_restart=None, memory_limit=LIMIT
    )
    assert fc is FailureClass.OOM_ANCESTOR


AGREE: list[tuple[str, dict[str, Any] | None, tuple[int | None, int], tuple[int | None, int]]] = [
    # (row, kernel event fields, counters before (oom, oom_kill), after)
    ("own memcg, v2", {"oom_memcg": WORKER_CG, "task_memcg": WORKER_CG}, (0, 0), (1, 1)),
    (
        "parent memcg, v1",
        {"oom_memcg": "/kubepods/pod1", "task_memcg": WORKER_CG},
        (None, 0),
        (None, 1),
    ),
    ("no kernel line, v2 parent", None, (0, 0), (0, 1)),
    ("no kernel line, v1", None, (None, 0), (None, 1)),
]


@pytest.mark.parametrize(("row", "fields", "before", "after"), AGREE, ids=[r[0] for r in AGREE])
def test_a_sigkill_with_oom_evidence_gets_the_class_local_workers_get(
    row: str,
    fields: dict[str, Any] | None,
    before: tuple[int | None, int],
    after: tuple[int | None, int],
) -> None:
    import signal

    from oomguard.diagnosis.classify import classify_death

    event = None if fields is None else OomEvent(victim_pid=4242, oom_type="memcg", **fields)
    c_before = CgroupCounters(*before, 100 * MiB, 400 * MiB, LIMIT)
    c_after = CgroupCounters(*after, 100 * MiB, 400 * MiB, LIMIT)
    local, _ = classify_death(
        signal.SIGKILL,  # the wait status of a process killed by SIGKILL
        killed_by=None,
        counters_before=c_before,
        counters_after=c_after,
        kernel_event=event,
    )
    rec = record(
        kernel=None if event is None else event.to_json(),
        counters_before=dict(c_before.to_json(), path="/sys/fs/cgroup" + WORKER_CG, version=2),
        counters_after=dict(c_after.to_json(), path="/sys/fs/cgroup" + WORKER_CG, version=2),
    )
    dask, _, _ = classify_dask_death(
        pid=4242, address=ADDRESS, record=_typed(rec), nanny_restart=None, memory_limit=LIMIT
    )
    assert dask is local, row


def _death(unconfirmed: bool, runs: int = 3) -> Any:
    from types import SimpleNamespace

    from oomguard.executors.dask.deaths import PendingDeath
    from oomguard.executors.dask.flights import Flight

    attempts = [SimpleNamespace(attempt_id=i + 1) for i in range(runs)]
    future = SimpleNamespace(key="oomguard-abc-1")
    flight = Flight(attempts, future, LIMIT, 0.0)  # type: ignore[arg-type]
    return PendingDeath(flight, ADDRESS, 4242, 0.0, LIMIT, unconfirmed)


@pytest.mark.parametrize("unconfirmed", [False, True])
def test_a_group_its_worker_noted_as_begun_counts_its_attempts_whatever_the_scheduler_heard(
    unconfirmed: bool,
) -> None:
    # The worker names a group's start to the scheduler with no wait: a SIGKILL can lose
    # that note after the group began (its first attempt ran its side effects). The
    # worker's own progress note, in the nanny's record, still says it began: its
    # attempts count (the one it was at gets the death's class), as when the scheduler
    # heard it, and nothing that ran runs again uncounted.
    from oomguard.executors.dask.deaths import group_death_events
    from oomguard.executors.dask.flights import Counters
    from oomguard.executors.events import AttemptEnded, Requeued

    death = _death(unconfirmed)
    rec = _typed(record(progress={"key": "oomguard-abc-1", "index": 1}))
    counters_ = Counters()
    events = group_death_events(death, rec, FailureClass.KILLED, {}, None, counters_)
    assert [type(e) for e in events] == [AttemptEnded, AttemptEnded, Requeued]
    assert [e.failure_class for e in events[:2]] == ["killed", "killed"]  # type: ignore[union-attr]
    assert counters_.requeued == 1


@pytest.mark.parametrize("progress", [None, {"key": "oomguard-other-7", "index": 0}])
def test_a_group_neither_the_scheduler_nor_its_worker_saw_begin_is_requeued(
    progress: dict[str, Any] | None,
) -> None:
    # Only waiting in the dead worker's queue: not an attempt of its tasks.
    from oomguard.executors.dask.deaths import group_death_events
    from oomguard.executors.dask.flights import Counters
    from oomguard.executors.events import Requeued

    rec = _typed(record(progress=progress))
    counters_ = Counters()
    events = group_death_events(_death(True), rec, FailureClass.KILLED, {}, None, counters_)
    assert [type(e) for e in events] == [Requeued] * 3 and counters_.requeued == 3
    # Heard to start, the same death counts every attempt (no note: each may have run).
    events = group_death_events(_death(False), rec, FailureClass.KILLED, {}, None, Counters())
    assert not [e for e in events if isinstance(e, Requeued)]
