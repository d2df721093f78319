"""classify_death and explain_death: one row per failure class a worker's death can get."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from oomguard.cgroups.cgroup import CgroupCounters
from oomguard.diagnosis.classify import Death, classify_death, describe_status, explain_death
from oomguard.jobs.model import FailureClass
from oomguard.kernlog import OomEvent
from oomguard.kernlog.watch import KernelLogWatch

MiB = 1024 * 1024


def killed_by_signal(sig: int) -> int:
    """A wait status as os.waitpid returns it for a death by ``sig``."""
    return sig & 0x7F


def exited(code: int) -> int:
    return (code & 0xFF) << 8


def v2(oom: int, oom_kill: int) -> CgroupCounters:
    return CgroupCounters(oom, oom_kill, 100 * MiB, 256 * MiB, 256 * MiB)


def v1(oom_kill: int | None) -> CgroupCounters:
    return CgroupCounters(None, oom_kill, 100 * MiB, 256 * MiB, 256 * MiB)


WORKER = "/sys/fs/cgroup/app/oomguard-1-2/worker-0"
OWN_LIMIT = OomEvent(
    oom_type="memcg",
    constraint="CONSTRAINT_MEMCG",
    victim_pid=4101,
    oom_memcg="/app/oomguard-1-2/worker-0",
    task_memcg="/app/oomguard-1-2/worker-0",
    lines=("Memory cgroup out of memory: Killed process 4101 (python)",),
)
POD_LIMIT = OomEvent(
    oom_type="memcg",
    constraint="CONSTRAINT_MEMCG",
    victim_pid=4101,
    oom_memcg="/app",
    task_memcg="/app/oomguard-1-2/worker-0",
    lines=("Memory cgroup out of memory: Killed process 4101 (python)",),
)
# 3.x v1 kernels: "Task in /app/.../worker-0 killed as a result of limit of /app".
POD_LIMIT_V1 = OomEvent(
    oom_type="memcg", victim_pid=4101, oom_memcg="/app", task_memcg="/app/oomguard-1-2/worker-0"
)
GLOBAL = OomEvent(oom_type="global", constraint="CONSTRAINT_NONE", victim_pid=4101)
GLOBAL_3_X = OomEvent(oom_type="global", victim_pid=4101)  # "Out of memory: Kill process"

SIGKILL = killed_by_signal(signal.SIGKILL)
ROWS: list[tuple[str, dict[str, Any], FailureClass]] = [
    # -- the worker's own cgroup limit
    (
        "v2 oom and oom_kill rose",
        dict(status=SIGKILL, before=v2(0, 0), after=v2(1, 1)),
        FailureClass.OOM_CGROUP,
    ),
    ("v1 oom_kill rose", dict(status=SIGKILL, before=v1(0), after=v1(1)), FailureClass.OOM_CGROUP),
    (
        "v1 oom_kill rose, the kernel line names the worker's limit",
        dict(status=SIGKILL, before=v1(0), after=v1(1), event=OWN_LIMIT),
        FailureClass.OOM_CGROUP,
    ),
    (
        "v2 counters win over a kernel line read for another kill",
        dict(status=SIGKILL, before=v2(0, 0), after=v2(1, 1), event=POD_LIMIT),
        FailureClass.OOM_CGROUP,
    ),
    # -- a parent's limit (pod, container)
    (
        "v2 only oom_kill rose",
        dict(status=SIGKILL, before=v2(0, 0), after=v2(0, 1)),
        FailureClass.OOM_ANCESTOR,
    ),
    (
        "v1 oom_kill rose, oom_memcg is not task_memcg",
        dict(status=SIGKILL, before=v1(0), after=v1(1), event=POD_LIMIT_V1),
        FailureClass.OOM_ANCESTOR,
    ),
    (
        "no cgroup, a memcg kill of the pid",
        dict(status=SIGKILL, event=POD_LIMIT),
        FailureClass.OOM_ANCESTOR,
    ),
    # -- the machine
    ("a global OOM names the pid", dict(status=SIGKILL, event=GLOBAL), FailureClass.OOM_SYSTEM),
    ("3.x: no constraint line", dict(status=SIGKILL, event=GLOBAL_3_X), FailureClass.OOM_SYSTEM),
    (
        "global OOM, v1 oom_kill rose (the kernel counts it in the victim's memcg)",
        dict(status=SIGKILL, before=v1(0), after=v1(1), event=GLOBAL),
        FailureClass.OOM_SYSTEM,
    ),
    (
        "global OOM, v2 only oom_kill rose",
        dict(status=SIGKILL, before=v2(0, 0), after=v2(0, 1), event=GLOBAL),
        FailureClass.OOM_SYSTEM,
    ),
    (
        "global OOM, counters unchanged",
        dict(status=SIGKILL, before=v2(0, 0), after=v2(0, 0), event=GLOBAL),
        FailureClass.OOM_SYSTEM,
    ),
    # -- oomguard's own kills
    (
        "the RSS watchdog",
        dict(status=SIGKILL, killed_by=("watchdog", {"rss_bytes": 300 * MiB})),
        FailureClass.OOM_WATCHDOG,
    ),
    ("a timeout", dict(status=SIGKILL, killed_by=("timeout", {})), FailureClass.TIMEOUT),
    ("a cancel", dict(status=SIGKILL, killed_by=("cancel", {})), FailureClass.KILLED),
    ("a stop", dict(status=SIGKILL, killed_by=("stop", {})), FailureClass.KILLED),
    # -- no OOM evidence
    ("SIGKILL, no evidence", dict(status=SIGKILL), FailureClass.KILLED),
    (
        "SIGKILL, counters unchanged",
        dict(status=SIGKILL, before=v2(0, 0), after=v2(0, 0)),
        FailureClass.KILLED,
    ),
    (
        "SIGKILL, v1 counter missing (kernel < 4.13)",
        dict(status=SIGKILL, before=v1(None), after=v1(None)),
        FailureClass.KILLED,
    ),
    ("SIGSEGV", dict(status=killed_by_signal(signal.SIGSEGV)), FailureClass.CRASHED),
    (
        "SIGSEGV, with a kernel line for the pid",
        dict(status=killed_by_signal(signal.SIGSEGV), event=GLOBAL),
        FailureClass.CRASHED,
    ),
    ("exited 0 without reporting", dict(status=exited(0)), FailureClass.CRASHED),
    ("exited 1 without reporting", dict(status=exited(1)), FailureClass.CRASHED),
]


@pytest.mark.parametrize(("row", "given", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_classify_death(row: str, given: dict[str, Any], expected: FailureClass) -> None:
    fc, evidence = classify_death(
        given["status"],
        killed_by=given.get("killed_by"),
        counters_before=given.get("before"),
        counters_after=given.get("after"),
        kernel_event=given.get("event"),
    )
    assert fc is expected, row
    assert evidence["signal"] == (given["status"] & 0x7F or None)
    if "before" in given:
        assert evidence["cgroup_before"] == given["before"].to_json()
        assert evidence["cgroup_after"] == given["after"].to_json()
    if "event" in given:
        assert evidence["kernel"] == given["event"].to_json()
        assert evidence["kernel_lines"] == list(given["event"].lines)
    if "killed_by" in given:
        reason, extra = given["killed_by"]
        assert evidence["killed_by_oomguard"] == reason
        assert extra.items() <= evidence.items()


def test_every_death_class_has_a_row() -> None:
    death_classes = {
        FailureClass.OOM_CGROUP,
        FailureClass.OOM_ANCESTOR,
        FailureClass.OOM_SYSTEM,
        FailureClass.OOM_WATCHDOG,
        FailureClass.KILLED,
        FailureClass.CRASHED,
        FailureClass.TIMEOUT,
    }
    assert {expected for _, _, expected in ROWS} == death_classes


def test_describe_status() -> None:
    assert describe_status(killed_by_signal(signal.SIGKILL)) == {
        "signal": 9,
        "signal_name": "SIGKILL",
        "exit_code": None,
        "core": False,
    }
    assert describe_status(exited(3)) == {"signal": None, "signal_name": None, "exit_code": 3}
    assert describe_status(killed_by_signal(63))["signal_name"] in ("SIG63", "SIGRTMAX-1")


# -- explain_death: waiting for the kernel's line, and the evidence it adds


@dataclass
class FakeCgroup:
    path: str


@dataclass
class FakeWorker:
    pid: int = 4101
    start_time: int = 777
    name: str = "worker-0"
    cgroup: FakeCgroup | None = field(default_factory=lambda: FakeCgroup(WORKER))
    killed_by: tuple[str, dict[str, Any]] | None = None
    counters_before: CgroupCounters | None = None
    peak_sample: int = 0


@dataclass
class FakeRusage:
    ru_maxrss: int  # KiB, as getrusage says on Linux


@dataclass
class Died:
    worker: FakeWorker
    status: int
    rusage: FakeRusage | None = None


class FakeKmsg:
    def __init__(self, events: list[OomEvent], unavailable: str | None = None) -> None:
        self.events = events
        self.unavailable = unavailable
        self.asked: list[tuple[int | None, str | None]] = []

    def find(self, pid: int | None = None, cgroup: str | None = None) -> OomEvent | None:
        self.asked.append((pid, cgroup))
        return next((e for e in self.events if e.victim_pid == pid), None)


def test_a_sigkill_without_a_kernel_line_waits_for_it() -> None:
    died = Died(FakeWorker(), SIGKILL)
    kmsg = FakeKmsg([])
    assert (
        explain_death(cast(Death, died), None, cast(KernelLogWatch, kmsg), waited_enough=False)
        is None
    )
    assert kmsg.asked == [(4101, WORKER)]
    explained = explain_death(
        cast(Death, died), None, cast(KernelLogWatch, kmsg), waited_enough=True
    )
    assert explained is not None
    fc, evidence, peak = explained
    assert fc is FailureClass.KILLED and peak is None
    assert evidence["kernel_log"] == "no OOM report for this pid"
    assert (evidence["worker"], evidence["pid"], evidence["pid_start_time"]) == (
        "worker-0",
        4101,
        777,
    )


def test_the_kernel_line_decides_and_the_peak_comes_from_the_cgroup() -> None:
    died = Died(FakeWorker(counters_before=v1(0)), SIGKILL, FakeRusage(ru_maxrss=2048))
    explained = explain_death(
        cast(Death, died),
        v1(1),
        cast(KernelLogWatch, FakeKmsg([POD_LIMIT_V1])),
        waited_enough=False,
    )
    assert explained is not None
    fc, evidence, peak = explained
    assert fc is FailureClass.OOM_ANCESTOR and peak == 256 * MiB
    assert evidence["cgroup"] == WORKER and evidence["maxrss_bytes"] == 2048 * 1024


@pytest.mark.parametrize("reason", ["timeout", "cancel", "watchdog", "stop"])
def test_own_kills_do_not_wait_for_the_kernel(reason: str) -> None:
    died = Died(FakeWorker(killed_by=(reason, {}), cgroup=None, peak_sample=5 * MiB), SIGKILL)
    explained = explain_death(
        cast(Death, died), None, cast(KernelLogWatch, FakeKmsg([])), waited_enough=False
    )
    assert explained is not None
    assert explained[2] == 5 * MiB and "kernel_log" not in explained[1]


def test_an_unreadable_kernel_log_does_not_wait_and_says_why() -> None:
    died = Died(FakeWorker(), SIGKILL)
    kmsg = FakeKmsg([GLOBAL], unavailable="cannot read /dev/kmsg: Permission denied")
    explained = explain_death(
        cast(Death, died), None, cast(KernelLogWatch, kmsg), waited_enough=False
    )
    assert explained is not None
    fc, evidence, _ = explained
    assert fc is FailureClass.KILLED and kmsg.asked == []
    assert evidence["kernel_log"] == "cannot read /dev/kmsg: Permission denied"
