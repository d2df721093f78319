"""oomguard.Executor(store=PATH): a script killed with -9 and run again gets the calls it
finished from the store instead of running them again (a real script, a real kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(300)]

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import oomguard

    runs = sys.argv[2]

    def work(i):
        with open(os.path.join(runs, f"{i}.{os.getpid()}.{time.time_ns()}"), "w"):
            pass
        time.sleep(0.2 if i < 4 else float(os.environ.get("LONG", "30")))
        return i * 10

    if __name__ == "__main__":
        with oomguard.Executor(max_workers=2, store=sys.argv[1]) as ex:
            futures = [ex.submit(work, i) for i in range(6)]
            first = [f.result() for f in futures[:4]]
            print("FIRST", first, flush=True)
            print("ALL", [f.result() for f in futures], flush=True)
    """
)


def _runs(runs: Path, i: int) -> int:
    return sum(1 for p in runs.iterdir() if p.name.startswith(f"{i}."))


def test_a_script_killed_and_run_again_gets_its_finished_calls(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    runs = tmp_path / "runs"
    runs.mkdir()
    store = str(tmp_path / "calls.sqlite")
    cmd = [sys.executable, str(script), store, str(runs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("FIRST [0, 10, 20, 30]"), line
    time.sleep(0.5)  # the answers of the first four are committed
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    assert [_runs(runs, i) for i in range(4)] == [1, 1, 1, 1]

    # Run again (the same script: the same calls), the two long calls made short by the
    # environment: the first four come from the store.
    env = dict(os.environ, LONG="0.2")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert again.returncode == 0, again.stderr
    assert "ALL [0, 10, 20, 30, 40, 50]" in again.stdout
    assert [_runs(runs, i) for i in range(4)] == [1, 1, 1, 1]
    assert _runs(runs, 4) == 2 and _runs(runs, 5) == 2


MAP_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import oomguard

    runs = sys.argv[2]

    def work(i):
        with open(os.path.join(runs, f"{i}.{os.getpid()}.{time.time_ns()}"), "w"):
            pass
        if i == 9:
            raise ValueError("nine")
        return i * 10

    if __name__ == "__main__":
        with oomguard.Executor(max_workers=2, store=sys.argv[1]) as ex:
            out = []
            try:
                for value in ex.map(work, range(12), chunksize=4):
                    out.append(value)
            except ValueError as err:
                print("RAISED", repr(err), flush=True)
            print("VALUES", out, flush=True)
    """
)


def test_map_chunks_run_again_come_from_the_store(tmp_path: Path) -> None:
    """A map's chunks (their values, and the call that raised) are in the store: the same
    script run again gets them from there, running none of them again."""
    script = tmp_path / "map_script.py"
    script.write_text(MAP_SCRIPT)
    runs = tmp_path / "runs"
    runs.mkdir()
    cmd = [sys.executable, str(script), str(tmp_path / "calls.sqlite"), str(runs)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr
    expected = "VALUES [0, 10, 20, 30, 40, 50, 60, 70, 80]"
    assert "RAISED ValueError('nine')" in first.stdout and expected in first.stdout
    ran = sorted(p.name.split(".")[0] for p in runs.iterdir())
    assert ran == sorted(str(i) for i in range(10))  # 9 raised: the rest of its chunk not run
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert "RAISED ValueError('nine')" in again.stdout and expected in again.stdout
    assert sorted(p.name.split(".")[0] for p in runs.iterdir()) == ran  # none ran again
