"""``oomguard run | status | results --store postgresql://...`` as subprocesses against a
real throwaway PostgreSQL: a job runs to success and is read back; a scheduler SIGKILLed
mid-job and restarted loses nothing and recomputes nothing that was stored (the SQLite
store's test_scheduler_crash.py, on PostgreSQL)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from conftest import OOMGUARD
from fixtures.polling import wait_for

pytestmark = pytest.mark.timeout(300)


def _stored_tasks(url: str) -> set[int]:
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            return {r[0] for r in conn.execute("SELECT task_id FROM results")}
    except psycopg.errors.UndefinedTable:
        return set()


def _count(url: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


def test_run_status_and_results_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text("".join(json.dumps({"seconds": 0.01 * i}) + "\n" for i in range(5)))
    run = subprocess.run(
        [
            *OOMGUARD,
            "run",
            "oomguard.examples:sleep",
            "--params",
            str(params),
            "--store",
            postgres_url,
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["counts"]["succeeded"] == 5
    assert list((tmp_path / "out" / "tasks").iterdir())  # the Parquet parts were written
    assert not list(tmp_path.glob("*.sqlite*"))  # nothing went to an SQLite file
    status = subprocess.run(
        [*OOMGUARD, "status", "--store", postgres_url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"]["succeeded"] == 5
    results = subprocess.run(
        [*OOMGUARD, "results", "--store", postgres_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert results.returncode == 0, results.stderr
    rows = [json.loads(line) for line in results.stdout.splitlines()]
    assert sorted(r["seconds"] for r in rows) == [0.01 * i for i in range(5)]


def test_a_password_is_never_printed(postgres_url: str) -> None:
    """A store URL with a password: the messages show host and database only."""
    url = postgres_url.replace("postgres@", "postgres:hunter2@").replace("/t", "/missing_", 1)
    out = subprocess.run(
        [*OOMGUARD, "status", "--store", url], capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    assert "hunter2" not in out.stdout + out.stderr
    assert "missing_" in out.stderr and "Traceback" not in out.stderr


def test_scheduler_killed_on_postgresql_resumes_without_recomputing(
    postgres_url: str, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    params = tmp_path / "p.jsonl"
    n = 120
    params.write_text(
        "".join(
            json.dumps({"x": i, "marker_dir": str(markers), "seconds": 0.02}) + "\n"
            for i in range(n)
        )
    )
    out = tmp_path / "out"
    cmd = [
        *OOMGUARD,
        "run",
        "fixtures.tasks:counted",
        "--params",
        str(params),
        "--store",
        postgres_url,
        "--out",
        str(out),
        "--workers",
        "2",
        "--json",
    ]
    rng = random.Random(7)
    kills: list[tuple[float, set[int]]] = []
    for _ in range(3):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Kill it mid-run: once a few more tasks have run (an event, not a sleep).
        target = len(list(markers.iterdir())) + rng.randint(5, 25)
        wait_for(lambda target=target: len(list(markers.iterdir())) >= target, timeout=120)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills.append((time.time(), _stored_tasks(postgres_url)))
        _gone, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"workers survived their scheduler: {alive}"
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["counts"]["succeeded"] == n
    assert any(stored for _, stored in kills), "no result was stored before any kill"
    runs: dict[int, list[float]] = {}
    for marker in markers.iterdir():
        x = int(marker.name.split("-")[0])
        runs.setdefault(x, []).append(marker.stat().st_mtime)
    assert sorted(runs) == list(range(n))
    for killed_at, stored in kills:
        for task_id in stored:
            later = [t for t in runs[task_id - 1] if t > killed_at]
            assert not later, f"task {task_id} was stored before a kill and ran again"
    import pyarrow.parquet as pq

    rows = pq.ParquetDataset(out / "tasks").read().to_pylist()
    assert sorted(r["x"] for r in rows) == list(range(n)), "each result exactly once on disk"
    assert _count(postgres_url, "SELECT COUNT(*) FROM results") == n
    lost = "SELECT COUNT(*) FROM attempts WHERE failure_class = 'lost'"
    assert _count(postgres_url, lost) >= 1


def test_runner_forget_and_gc_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """``Runner(store=URL)`` runs a sweep (params over the inline limit go to the blobs
    table and come back to the worker); ``oomguard forget`` and ``gc`` work on the URL:
    the blob no row refers to after the forget is collected."""
    import oomguard

    with oomguard.Runner(store=postgres_url, workers=1) as runner:
        runner.start()
        big = "y" * (100 * 1024)
        job = runner.sweep("oomguard.examples:noop", [{"x": "a"}, {"x": big}], name="pg")
        status = job.wait(progress=False)
        job_id = status["job_id"]
        assert status["counts"]["succeeded"] == 2
        assert sorted(r["result"] for r in job.results().to_pylist()) == ["a", big]
    assert _count(postgres_url, "SELECT COUNT(*) FROM blobs") == 1
    forget = subprocess.run(
        [*OOMGUARD, "forget", str(job_id), "--store", postgres_url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert forget.returncode == 0, forget.stderr
    assert _count(postgres_url, "SELECT COUNT(*) FROM tasks") == 0
    gc = subprocess.run(
        [*OOMGUARD, "gc", "--store", postgres_url, "--min-age", "0s", "--force", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gc.returncode == 0, gc.stderr
    assert json.loads(gc.stdout)["removed"] == 1
    assert _count(postgres_url, "SELECT COUNT(*) FROM blobs") == 0
