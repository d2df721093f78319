"""classify_dask_death: one row per class a Dask worker's death can get, from the nanny's record."""

from __future__ import annotations

from typing import Any

import pytest

from oomguard.cgroups.cgroup import CgroupCounters
from oomguard.executors.dask_deaths import NEAR_LIMIT, classify_dask_death
from oomguard.jobs.model import FailureClass
from oomguard.kernlog import OomEvent

MiB = 1024 * 1024
LIMIT = 512 * MiB
ADDRESS = "tcp://127.0.0.1:40001"
WORKER_CG = "/kubepods/pod1/worker"


def counters(oom_kill: int) -> dict[str, Any]:
    """The nanny's counters: CgroupCounters.to_json() plus where they were read."""
    c = CgroupCounters(oom_kill, oom_kill, 100 * MiB, 400 * MiB, LIMIT).to_json()
    return dict(c, path="/sys/fs/cgroup" + WORKER_CG, version=2)


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
    ("counter rose, SIGKILL", record(counters_after=counters(1)), None, FailureClass.OOM_CGROUP),
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
        pid=4242, address=ADDRESS, record=rec, nanny_restart=restart, memory_limit=LIMIT
    )
    assert fc is expected, row
    assert (evidence["executor"], evidence["worker"], evidence["pid"]) == ("dask", ADDRESS, 4242)
    assert evidence["worker_memory_limit"] == LIMIT
    if rec is None:
        assert "no nanny" in evidence["nanny_record"] and peak is None
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
        FailureClass.OOM_WATCHDOG,
        FailureClass.KILLED,
        FailureClass.CRASHED,
    }


@pytest.mark.xfail(
    strict=True,
    reason="dask_deaths.classify_dask_death classes every memcg kill as oom_cgroup; "
    "classify_death (local workers) says oom_ancestor when oom_memcg is not task_memcg",
)
def test_a_parents_memcg_limit_is_oom_ancestor_as_for_local_workers() -> None:
    rec = record(
        kernel=kernel(oom_type="memcg", oom_memcg="/kubepods/pod1", task_memcg=WORKER_CG),
        counters_after=counters(1),
    )
    fc, _, _ = classify_dask_death(
        pid=4242, address=ADDRESS, record=rec, nanny_restart=None, memory_limit=LIMIT
    )
    assert fc is FailureClass.OOM_ANCESTOR
