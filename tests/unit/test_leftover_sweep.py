"""The sweep after each attempt against a fake cgroup v2 tree, and a cgroup that cannot be
removed: logged and counted by the pool, never raised (worker/leftovers.py, worker/pool.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.fake_cgroup import V2_FILES, write_files
from oomguard.cgroups.detect import IsolationPlan
from oomguard.errors import IsolationError
from oomguard.worker.pool import PoolConfig, WorkerPool

SWEEP = """
import json, os, subprocess, sys
from pathlib import Path
from oomguard.worker.leftovers import Leftovers
cg = Path(sys.argv[1])
left = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        for _ in range(2)]
(cg / "cgroup.procs").write_text("".join(f"{p}\\n" for p in (os.getpid(), *(p.pid for p in left))))
sweeper = Leftovers(str(cg))
first = sweeper.sweep()
gone = [not Path(f"/proc/{p.pid}").exists() for p in left]
(cg / "cgroup.procs").write_text(f"{os.getpid()}\\n")
print(json.dumps({"first": first, "gone": gone, "again": sweeper.sweep()}))
"""


def test_sweep_kills_what_the_cgroup_lists_besides_the_worker(tmp_path: Path) -> None:
    # In a process of its own: the sweep makes its process a child subreaper.
    cg = write_files(tmp_path / "w1", V2_FILES)
    out = subprocess.run(
        [sys.executable, "-c", SWEEP, str(cg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    # Both killed and reaped (no zombie left); nothing new listed: nothing killed, and
    # the worker itself never.
    assert json.loads(out) == {"first": 2, "gone": [True, True], "again": 0}


WATCHDOG_SWEEP = """
import json, os, subprocess, sys, time
from oomguard.worker.leftovers import Leftovers
sweeper = Leftovers(None)
quiet = sweeper.sweep()  # nothing started: nothing listed, nothing killed
done = subprocess.Popen(["true"])
while open(f"/proc/{done.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
    time.sleep(0.01)
exited = sweeper.sweep()  # a child that exited by itself is reaped, not counted
zombie_left = os.path.exists(f"/proc/{done.pid}")
running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
killed = sweeper.sweep()
sweeper.reap()
print(json.dumps({"quiet": quiet, "exited": exited, "zombie_left": zombie_left,
                  "killed": killed, "gone": not os.path.exists(f"/proc/{running.pid}")}))
"""


def test_watchdog_sweep_kills_running_children_and_reaps_exited_ones() -> None:
    out = subprocess.run(
        [sys.executable, "-c", WATCHDOG_SWEEP],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert json.loads(out) == {
        "quiet": 0,
        "exited": 0,
        "zombie_left": False,
        "killed": 1,
        "gone": True,
    }


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
