"""The failure path: a job whose last outcome is a failure returns, one task never stops the
loop (text that cannot be encoded, a missing blob, a result that cannot be stored), and a
task that kills its scheduler is failed as ``lost`` instead of crash-looping it."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import oomguard
from conftest import run_cli
from oomguard.store.records import NewTask
from oomguard.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(180)


def _parquet_rows(out: Path) -> list[dict[str, Any]]:
    return pq.ParquetDataset(out / "tasks").read().to_pylist() if (out / "tasks").exists() else []


def test_cli_run_with_out_returns_when_the_last_outcome_is_an_oom_kill(
    tmp_path: Path, require_cgroup: None
) -> None:
    # The issue's reproduction: 3 small tasks, and one OOM-killed at the cap that ends last.
    params = tmp_path / "p.jsonl"
    params.write_text(
        "".join(
            json.dumps(p) + "\n" for p in ({"mib": 20}, {"mib": 1024}, {"mib": 20}, {"mib": 20})
        )
    )
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        "oomguard.examples:allocate",
        "--params",
        str(params),
        "--store",
        str(tmp_path / "s.db"),
        "--out",
        str(out),
        "--workers",
        "2",
        "--worker-memory",
        "256MiB",
        "--json",
        timeout=90,
    )
    assert proc.returncode == 1, proc.stderr  # finished, with a failed task
    status = json.loads(proc.stdout)
    assert status["counts"]["succeeded"] == 3 and status["counts"]["failed"] == 1
    rows = _parquet_rows(out)
    assert sorted(r["mib"] for r in rows) == [20, 20, 20]
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT COUNT(*) FROM results WHERE part IS NULL").fetchone() == (0,)


def test_job_wait_returns_when_a_job_ends_on_an_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with oomguard.Runner(store=str(tmp_path / "s.db"), workers=2) as runner:
        ok = runner.sweep(
            "fixtures.tasks:echo", [{"value": i} for i in range(3)], out=str(out / "ok")
        )
        ok.wait(timeout=60, progress=False)
        job = runner.sweep("fixtures.tasks:fail_after", [{"seconds": 1.0}], out=str(out / "bad"))
        status = job.wait(timeout=60, progress=False)
        assert status["state"] == "failed"
        # A job whose results all arrived before its last task failed.
        mixed = runner.sweep(
            "fixtures.tasks:echo",
            [{"value": 1}, {"value": 2}, {"seconds": 1.5, "fail": True}],
            out=str(out / "mixed"),
        )
        status = mixed.wait(timeout=60, progress=False)
        assert status["counts"]["succeeded"] == 2 and status["counts"]["failed"] == 1
    assert sorted(r["result"] for r in _parquet_rows(out / "ok")) == [0, 1, 2]
    assert sorted(r["result"] for r in _parquet_rows(out / "mixed")) == [1, 2]


def test_lone_surrogates_in_an_error_and_a_result_never_stop_the_scheduler(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with oomguard.Runner(store=str(tmp_path / "s.db"), workers=2) as runner:
        bad = runner.submit("oomguard.examples:fail", message="bad \ud800 text")
        status = bad.wait(timeout=60, progress=False)
        assert status["state"] == "failed"
        (failure,) = bad.failures()
        assert failure["failure_class"] == "error"
        assert "bad \\ud800 text" in failure["error"]
        job = runner.sweep(
            "fixtures.tasks:echo",
            [{"value": "x\udcff"}, {"value": {"k": "\ud83d"}}, {"value": "3"}],
            out=str(out),
        )
        status = job.wait(timeout=60, progress=False)
        assert status["counts"]["succeeded"] == 3, status
        assert runner.alive
    rows = _parquet_rows(out)
    values = sorted(
        str(r.get("result") if r.get("result") is not None else r.get("k")) for r in rows
    )
    assert values == ["3", "\\ud83d", "x\\udcff"]


def test_a_missing_params_blob_fails_its_task_and_the_loop_goes_on(tmp_path: Path) -> None:
    store_path = tmp_path / "s.db"
    big = "p" * (100 * 1024)  # params over 64 KiB live in a blob file
    with SqliteStore(store_path) as store:
        store.create_job("j1", name="blobs", fn="fixtures.tasks:echo", agg=None)
        stored = [store.blobs.params_row({"value": v}) for v in [big, 1, 2]]
        rows = [
            NewTask(
                job_id="j1",
                grp=i,
                kind="task",
                fn="fixtures.tasks:echo",
                state="ready",
                params=p.params,
                params_ref=p.params_ref,
            )
            for i, p in enumerate(stored)
        ]
        store.add_tasks(rows, job_id="j1", groups=3)
        store.set_job_groups("j1", 3, sealed=True)
        (blob,) = list(store.blob_dir.iterdir())
    blob.unlink()  # deleted by hand (or by gc forced past its floor)
    with oomguard.Runner(store=str(store_path), workers=2) as runner:
        job = runner.job("j1")
        status = job.wait(timeout=60, progress=False)
        assert status["counts"]["succeeded"] == 2 and status["counts"]["failed"] == 1
        (failure,) = job.failures()
        assert failure["failure_class"] == "error"
        assert f"input blob {blob.name} is missing" in failure["error"]
        # A second job runs: the scheduler is alive.
        after = runner.sweep("fixtures.tasks:echo", [{"value": 7}])
        assert after.wait(timeout=60, progress=False)["counts"]["succeeded"] == 1


def test_a_missing_payload_blob_fails_its_task_and_the_loop_goes_on(tmp_path: Path) -> None:
    store_path = tmp_path / "s.db"
    import pickle

    with SqliteStore(store_path) as store:
        store.create_job("j1", name="payload", fn="fixtures.tasks:echo", agg=None)
        ref = store.blobs.put(pickle.dumps(((b"x" * (2 * 1024 * 1024),), {})))
        store.add_tasks(
            [
                NewTask(
                    job_id="j1",
                    grp=0,
                    kind="task",
                    fn="fixtures.tasks:echo",
                    state="ready",
                    payload_ref=ref,
                )
            ],
            job_id="j1",
            groups=1,
        )
        store.set_job_groups("j1", 1, sealed=True)
        (store.blob_dir / ref).unlink()
    with oomguard.Runner(store=str(store_path), workers=1) as runner:
        job = runner.job("j1")
        assert job.wait(timeout=60, progress=False)["state"] == "failed"
        (failure,) = job.failures()
        assert f"input blob {ref} is missing" in failure["error"]
        assert runner.alive


def test_a_result_that_cannot_be_stored_fails_its_task_alone(tmp_path: Path) -> None:
    store_path = tmp_path / "s.db"
    # Where result blobs go is a file: every large result fails to be written.
    Path(str(store_path) + ".blobs").write_text("not a directory")
    with oomguard.Runner(store=str(store_path), workers=2) as runner:
        job = runner.sweep("fixtures.tasks:big_result", [{"mib": 2, "seconds": 0.5}])
        small = runner.sweep("fixtures.tasks:echo", [{"value": i} for i in range(5)])
        status = job.wait(timeout=60, progress=False)
        assert status["state"] == "failed"
        (failure,) = job.failures()
        assert failure["failure_class"] == "error"
        assert failure["error"].startswith("error: result could not be stored: ")
        assert failure["attempts"][-1]["failure_class"] == "error"
        assert small.wait(timeout=60, progress=False)["counts"]["succeeded"] == 5
        assert runner.alive


def test_a_task_that_kills_its_scheduler_fails_as_lost_after_lost_retries(
    tmp_path: Path, require_cgroup: None
) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text("{}\n")
    args = (
        "run",
        "fixtures.tasks:kill_scheduler",
        "--params",
        str(params),
        "--store",
        str(tmp_path / "s.db"),
        "--workers",
        "1",
        "--json",
    )
    env = {"OOMGUARD_LOST_RETRIES": "1"}
    for _ in range(2):  # killed by its own task, twice
        proc = run_cli(*args, env=env, timeout=60)
        assert proc.returncode == -9, proc.stderr
    proc = run_cli(*args, env=env, timeout=60)
    assert proc.returncode == 1, proc.stderr
    status = json.loads(proc.stdout)
    assert status["counts"]["failed"] == 1
    with SqliteStore(tmp_path / "s.db") as store:
        (failure,) = store.queries.failed_tasks(store.resolve_job(None))
    assert failure.failure_class == "lost"
    assert failure.error is not None and "lost 2 times" in failure.error
    assert [a.failure_class for a in failure.attempts] == ["lost", "lost"]
    assert os.path.exists(tmp_path / "s.db")
