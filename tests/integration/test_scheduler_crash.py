"""The scheduler SIGKILLed at random points and restarted finishes the job exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from conftest import OOMGUARD
from fixtures.polling import wait_for

pytestmark = pytest.mark.timeout(300)


def _stored_tasks(store: Path) -> set[int]:
    if not store.exists():
        return set()
    db = sqlite3.connect(store)
    try:
        return {r[0] for r in db.execute("SELECT task_id FROM results")}
    except sqlite3.OperationalError:
        return set()
    finally:
        db.close()


def test_scheduler_killed_repeatedly_resumes_without_recomputing(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    params = tmp_path / "p.jsonl"
    n = 150
    params.write_text(
        "".join(
            json.dumps({"x": i, "marker_dir": str(markers), "seconds": 0.02}) + "\n"
            for i in range(n)
        )
    )
    store = tmp_path / "s.sqlite"
    out = tmp_path / "out"
    cmd = [
        *OOMGUARD,
        "run",
        "fixtures.tasks:counted",
        "--params",
        str(params),
        "--store",
        str(store),
        "--out",
        str(out),
        "--workers",
        "2",
        "--json",
    ]
    rng = random.Random(7)
    kills: list[tuple[float, set[int]]] = []
    for _ in range(4):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Kill it mid-run: once a few more tasks have run (an event, not a sleep).
        target = len(list(markers.iterdir())) + rng.randint(5, 25)
        wait_for(lambda target=target: len(list(markers.iterdir())) >= target, timeout=120)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        killed_at = time.time()
        kills.append((killed_at, _stored_tasks(store)))
        # Workers never outlive their scheduler.
        _gone, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"workers survived their scheduler: {alive}"
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["counts"]["succeeded"] == n
    assert any(k[1] for k in kills), "no result was stored before any kill: kill later"
    # Executions per x (task id is x + 1: one task per params line, inserted in order).
    runs: dict[int, list[float]] = {}
    for marker in markers.iterdir():
        x = int(marker.name.split("-")[0])
        runs.setdefault(x, []).append(marker.stat().st_mtime)
    assert sorted(runs) == list(range(n))
    for killed_at, stored in kills:
        for task_id in stored:
            later = [t for t in runs[task_id - 1] if t > killed_at]
            assert not later, f"task {task_id} was stored before a kill and ran again"
    rows = pq.ParquetDataset(out / "tasks").read().to_pylist()
    assert sorted(r["x"] for r in rows) == list(range(n)), "each result exactly once on disk"
    db = sqlite3.connect(store)
    assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == n
    lost = db.execute("SELECT COUNT(*) FROM attempts WHERE failure_class = 'lost'").fetchone()[0]
    db.close()
    assert lost >= 1
    assert not os.path.exists(str(store) + "-journal")


def test_sigterm_stops_cleanly_and_the_next_run_resumes(tmp_path: Path) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text("".join(json.dumps({"seconds": 0.5}) + "\n" for _ in range(12)))
    store = tmp_path / "s.sqlite"
    cmd = [
        *OOMGUARD,
        "run",
        "oomguard.examples:sleep",
        "--params",
        str(params),
        "--store",
        str(store),
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not _stored_tasks(store) and time.monotonic() < deadline:
        time.sleep(0.05)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err  # ExitCode.TERMINATED
    assert "terminated" in err and "Traceback" not in err
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive
    db = sqlite3.connect(store)
    states = dict(db.execute("SELECT state, COUNT(*) FROM attempts GROUP BY state").fetchall())
    assert db.execute("SELECT COUNT(*) FROM locks").fetchone()[0] == 0
    db.close()
    assert "failed" not in states  # a stop is not a failure of the tasks
    final = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["counts"]["succeeded"] == 12
    assert summary["failures_by_class"] == {}


def test_parts_left_unwritten_by_a_killed_scheduler_are_written_on_restart(
    tmp_path: Path,
) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text("".join(json.dumps({"x": i}) + "\n" for i in range(5)))
    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    cmd = [
        *OOMGUARD,
        "run",
        "oomguard.examples:noop",
        "--params",
        str(params),
        "--store",
        str(store),
        "--out",
        str(out),
        "--json",
    ]
    assert subprocess.run(cmd, capture_output=True, timeout=120).returncode == 0
    # As if killed after the job's last result was stored, before its Parquet part.
    db = sqlite3.connect(store)
    db.execute("UPDATE results SET part = NULL")
    db.execute("DELETE FROM parts")
    db.commit()
    db.close()
    for part in (out / "tasks").iterdir():
        part.unlink()
    # Exit 0 and every row below: the restarted run wrote the parts its dead predecessor
    # left due (a run whose parts never come never ends: the 120 s bound fails it).
    assert subprocess.run(cmd, capture_output=True, timeout=120).returncode == 0
    rows = pq.ParquetDataset(out / "tasks").read().to_pylist()
    assert sorted(r["x"] for r in rows) == list(range(5))
