"""The sweep after each attempt against a fake cgroup v2 tree, and a cgroup that cannot be
removed: logged and counted by the pool, never raised (worker/leftovers.py, worker/pool.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.fake_cgroup import V2_FILES, write_files
from oomguard.cgroups.detect import IsolationPlan
from oomguard.errors import IsolationError
from oomguard.worker.leftovers import Leftovers
from oomguard.worker.pool import PoolConfig, WorkerPool


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_sweep_kills_what_the_cgroup_lists_besides_the_worker(tmp_path: Path) -> None:
    cg = write_files(tmp_path / "w1", V2_FILES)
    left = [_sleeper(), _sleeper()]
    try:
        (cg / "cgroup.procs").write_text(
            "".join(f"{pid}\n" for pid in (os.getpid(), *(p.pid for p in left)))
        )
        sweeper = Leftovers(str(cg))
        assert sweeper.sweep() == 2
        # Killed and reaped (this process is their parent: the sweep waited for them).
        assert [Path(f"/proc/{p.pid}").exists() for p in left] == [False, False]
        # Nothing new listed: nothing killed, and the worker itself never.
        (cg / "cgroup.procs").write_text(f"{os.getpid()}\n")
        assert sweeper.sweep() == 0
    finally:
        for p in left:
            p.kill()
            p.wait()


class _StuckCgroup:
    """A cgroup whose processes the kernel cannot free (one in D state, say)."""

    path = Path("/sys/fs/cgroup/fake/w1")

    def kill_all(self) -> None:
        pass

    def remove(self, timeout: float = 2.0) -> None:
        raise IsolationError(f"cannot remove {self.path}: still busy after 2s")


def test_a_cgroup_that_cannot_be_removed_is_counted_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plan = IsolationPlan("watchdog", "test", None, None, None)
    pool = WorkerPool(PoolConfig(workers=1, isolation=plan))
    worker = pool.spawn()
    try:
        worker.cgroup = _StuckCgroup()  # type: ignore[assignment]
        pool.retire(worker, "max_tasks")
    finally:
        pool.stop()
    assert pool.leftovers == {"cgroups_not_removed": 1}
    assert pool.recycles == {"max_tasks": 1}
    assert "still busy" in caplog.text
