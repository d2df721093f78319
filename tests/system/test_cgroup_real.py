"""Real worker cgroups on this machine: a child over its limit is killed by the kernel.

Needs root and a writable memory cgroup; skipped otherwise, unless
OOMGUARD_REQUIRE_CGROUP=1 makes the missing cgroup a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from oomguard.cgroups.cgroup import classify_counters
from oomguard.cgroups.detect import IsolationPlan, detect_isolation
from oomguard.cgroups.workers import CounterFiles, WorkerCgroups

pytestmark = pytest.mark.system

MiB = 1024**2
ALLOCATE = (
    "import sys; sys.stdin.readline(); "
    "b = bytearray(256 * 1024 * 1024); "
    "[b.__setitem__(i, 1) for i in range(0, len(b), 4096)]"
)


@pytest.fixture
def plan() -> IsolationPlan:
    required = os.environ.get("OOMGUARD_REQUIRE_CGROUP") == "1"
    reason = ""
    if os.geteuid() != 0:
        reason = "needs root to create memory cgroups"
    else:
        found = detect_isolation()
        if found.mode == "watchdog":
            reason = f"needs a writable memory cgroup: {found.reason}"
        else:
            return found
    if required:
        pytest.fail(f"OOMGUARD_REQUIRE_CGROUP=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def workers(plan: IsolationPlan) -> Iterator[WorkerCgroups]:
    tree = WorkerCgroups.create(plan)
    try:
        yield tree
    finally:
        tree.remove_all()
        assert not tree.run_dir.exists()


def test_child_over_its_limit_is_oom_killed_in_its_cgroup(workers: WorkerCgroups) -> None:
    worker = workers.new_worker("worker-0", 64 * MiB)
    before = worker.counters()
    assert before.limit_bytes == 64 * MiB
    child = subprocess.Popen([sys.executable, "-c", ALLOCATE], stdin=subprocess.PIPE)
    status: int | None = None
    try:
        worker.add_process(child.pid)
        assert worker.pids() == [child.pid]
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
        # wait4, as the pool does, to keep the status and rusage of the kill.
        _, status, _ = os.wait4(child.pid, 0)
        child.returncode = -signal.SIGKILL  # reaped here; tell Popen so it does not wait
    finally:
        if status is None:
            child.kill()
            child.wait()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    after = worker.counters()
    assert after.oom_kill is not None and before.oom_kill is not None
    assert after.oom_kill == before.oom_kill + 1
    assert classify_counters(before, after) == "oom_cgroup"
    assert after.peak_bytes is not None and 48 * MiB <= after.peak_bytes <= 64 * MiB
    assert worker.reset_peak() is True
    peak = worker.counters().peak_bytes
    assert peak is not None and peak < 48 * MiB


def test_counters_read_through_kept_files_see_the_kill_and_the_reset(
    workers: WorkerCgroups,
) -> None:
    """The pool and the worker read counters through files kept open (CounterFiles):
    they give what a read by path gives, before and after a real OOM kill, and their
    reset restarts the peak as MemoryCgroup.reset_peak does."""
    worker = workers.new_worker("worker-0", 64 * MiB)
    files = CounterFiles(worker)
    before = files.counters()
    by_path = worker.counters()
    assert (before.oom_kill, before.limit_bytes) == (by_path.oom_kill, 64 * MiB)
    assert before.usage_bytes is not None and before.peak_bytes is not None
    child = subprocess.Popen([sys.executable, "-c", ALLOCATE], stdin=subprocess.PIPE)
    status: int | None = None
    try:
        worker.add_process(child.pid)
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
        _, status, _ = os.wait4(child.pid, 0)
        child.returncode = -signal.SIGKILL
    finally:
        if status is None:
            child.kill()
            child.wait()
    after = files.counters()
    assert after.oom_kill is not None and before.oom_kill is not None
    assert after.oom_kill == before.oom_kill + 1 == worker.counters().oom_kill
    assert classify_counters(before, after) == "oom_cgroup"
    assert after.peak_bytes is not None and 48 * MiB <= after.peak_bytes <= 64 * MiB
    assert files.reset_peak() is True
    peak = files.counters().peak_bytes
    assert peak is not None and peak < 48 * MiB
    files.close()
    assert files.counters().oom_kill == after.oom_kill  # closed: read by path


def test_limits_grow_and_shrink_and_leftovers_go(
    plan: IsolationPlan, workers: WorkerCgroups
) -> None:
    worker = workers.new_worker("worker-1", 64 * MiB)
    worker.set_limit(128 * MiB)
    assert worker.counters().limit_bytes == 128 * MiB
    worker.set_limit(32 * MiB)
    assert worker.counters().limit_bytes == 32 * MiB
    worker.set_limit(None)
    assert worker.counters().limit_bytes is None
    assert plan.own_cgroup is not None
    assert workers.run_dir.parent == plan.own_cgroup
