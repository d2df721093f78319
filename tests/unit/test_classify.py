"""classify_death and explain_death."""

from __future__ import annotations

import signal

from oomguard.cgroups.cgroup import CgroupCounters
from oomguard.diagnosis.classify import classify_death
from oomguard.jobs.model import FailureClass
from oomguard.kernlog import OomEvent

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


def test_v1_a_parents_limit_is_told_by_the_kernel_line() -> None:
    # v1 counts oom_kill on the victim's own cgroup whichever limit was hit.
    fc, _ = classify_death(
        SIGKILL,
        killed_by=None,
        counters_before=v1(0),
        counters_after=v1(1),
        kernel_event=POD_LIMIT_V1,
    )
    assert fc is FailureClass.OOM_ANCESTOR
    fc, _ = classify_death(
        SIGKILL, killed_by=None, counters_before=v1(0), counters_after=v1(1), kernel_event=OWN_LIMIT
    )
    assert fc is FailureClass.OOM_CGROUP
    # v2's "oom" counter already says it: a kernel line read for another kill changes nothing.
    fc, _ = classify_death(
        SIGKILL,
        killed_by=None,
        counters_before=v2(0, 0),
        counters_after=v2(1, 1),
        kernel_event=POD_LIMIT,
    )
    assert fc is FailureClass.OOM_CGROUP
