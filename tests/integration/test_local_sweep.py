"""The local pool end to end: real SQLite, real worker processes, real kills."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

import oomguard
from fixtures.polling import wait_for
from oomguard.executors.local import LocalExecutor
from oomguard.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from conftest import RunCli

pytestmark = pytest.mark.timeout(240)


def test_sweep_with_replicates_and_aggregations_writes_parquet(tmp_path: Path) -> None:
    markers = tmp_path / "m"
    markers.mkdir()
    out = tmp_path / "out"
    params = ({"x": i, "marker_dir": str(markers)} for i in range(200))
    with oomguard.Runner(store=str(tmp_path / "s.sqlite"), workers=2) as runner:
        job = runner.sweep(
            "fixtures.tasks:counted",
            params,
            replicates=3,
            aggregate="fixtures.tasks:total",
            out=out,
        )
        status = job.wait(timeout=180, progress=False)
        assert status["counts"]["succeeded"] == 800
        assert status["state"] == "succeeded"
        assert job.results().num_rows == 600
        assert job.failures() == []
    tasks = pq.ParquetDataset(out / "tasks").read().to_pylist()
    aggs = pq.ParquetDataset(out / "aggregates").read().to_pylist()
    assert len(tasks) == 600 and len(aggs) == 200
    assert sorted((r["x"], r["replicate"]) for r in tasks) == [
        (x, rep) for x in range(200) for rep in range(3)
    ]
    assert all(r["y"] == 2 * r["x"] and r["attempts"] == 1 for r in tasks)
    by_x = {r["x"]: r for r in aggs}
    assert sorted(by_x) == list(range(200))
    assert all(by_x[x]["sum_y"] == 6 * x and by_x[x]["n"] == 3 for x in by_x)
    assert len(list(markers.iterdir())) == 600  # every replicate ran exactly once


def test_a_small_window_read_without_claims_runs_each_task_once(tmp_path: Path) -> None:
    # A scheduler that owns its store reads its window without claiming it (the tasks stay
    # ready in the store): with a window of 6 refilled hundreds of times, what it begun,
    # retried (ready again, behind where it read) and released (aggregations) is read
    # again exactly when it should be: every replicate runs once, a failing one twice.
    markers = tmp_path / "m"
    markers.mkdir()
    params = ({"x": i, "marker_dir": str(markers)} for i in range(60))
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"), workers=2, window=6, retries=1
    ) as runner:
        job = runner.sweep(
            "fixtures.tasks:counted_failing_once",
            params,
            replicates=2,
            aggregate="fixtures.tasks:total",
        )
        status = job.wait(timeout=180, progress=False)
        assert status["state"] == "succeeded"
        assert status["counts"]["succeeded"] == 180
    runs = sorted(name.rsplit("-", 1)[0] for name in os.listdir(markers))
    assert runs == sorted(
        f"{x}-{rep}" for x in range(60) for rep in range(2) for _ in range(1 + x % 2)
    )
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        attempts = dict(db.execute("SELECT task_id, COUNT(*) FROM attempts GROUP BY task_id"))
        kinds = dict(db.execute("SELECT id, kind FROM tasks"))
    assert len(attempts) == 180
    assert sum(attempts.values()) == 180 + 60  # 60 odd replicates ran twice
    assert all(n == 1 for task, n in attempts.items() if kinds[task] == "aggregate")


def test_worker_killed_mid_task_is_replaced_and_task_retried(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    params = [{"x": i, "pid_dir": str(pids), "seconds": 30.0 if i == 0 else 0.0} for i in range(6)]
    with oomguard.Runner(store=str(tmp_path / "s.sqlite"), workers=2) as runner:
        job = runner.sweep("fixtures.tasks:pid_then_sleep", params)
        pid = int(wait_for(lambda: (pids / "0.pid").exists() and (pids / "0.pid").read_text()))
        os.kill(pid, signal.SIGKILL)
        status = job.wait(timeout=60, progress=False)
        assert status["counts"]["succeeded"] == 6
        assert status["failures_by_class"] == {"killed": 1}
        attempts = runner.store.queries.attempts(1)
        assert [a.failure_class for a in attempts] == ["killed", None]
        assert attempts[0].pid == pid
        evidence = attempts[0].evidence
        assert isinstance(evidence, dict), evidence
        assert evidence["signal_name"] == "SIGKILL"
        assert runner.scheduler is not None
        executor = runner.scheduler.executor
        assert isinstance(executor, LocalExecutor)
        assert len(executor.pool.workers) == 2
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    params = [
        {"account": "a", "x": i, "log_dir": str(logs), "seconds": 20.0 if i == 0 else 0.2}
        for i in range(3)
    ]
    params.append({"account": "b", "x": 3, "log_dir": str(logs), "seconds": 0.2})
    # A declared estimate: no probe attempt, so task 3 runs beside the lock holder.
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"), workers=2, task_memory="64MiB"
    ) as runner:
        job = runner.sweep("fixtures.tasks:locked", params)
        pid = int(wait_for(lambda: (logs / "0.pid").exists() and (logs / "0.pid").read_text()))
        # Task 3 (account b) runs to its end on the other worker meanwhile ...
        wait_for(
            lambda: any(p.name.startswith("3-") and "end" in p.read_text() for p in logs.iterdir())
        )
        # ... while 0 holds account:a, no other task of account a has started.
        started = [p.name.split("-")[0] for p in logs.iterdir() if not p.name.endswith(".pid")]
        assert "1" not in started and "2" not in started
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        status = job.wait(timeout=60, progress=False)
        assert status["counts"]["succeeded"] == 4
        assert status["failures_by_class"] == {"killed": 1}
        assert isinstance(runner.store, SqliteStore)  # looks inside the SQLite backend
        with runner.store.transaction() as db:
            assert db.execute("SELECT COUNT(*) FROM locks").fetchone()[0] == 0
    spans = []
    for path in logs.iterdir():
        if path.name.endswith(".pid") or not path.name.startswith(("0-", "1-", "2-")):
            continue
        lines = path.read_text().split("\n")
        start = float(lines[0].split()[0])
        end = float(lines[1].split()[0]) if len(lines) > 1 and lines[1] else killed_at
        spans.append((start, end))
    spans.sort()
    assert len(spans) == 4  # 0 twice (killed, retried), 1, 2
    for (_s1, e1), (s2, _) in itertools.pairwise(spans):
        assert s2 >= e1 - 0.01, "two tasks with the same lock ran at once"


def test_store_rejects_files_that_are_not_stores(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-store"
    bogus.write_text("hello, this is not sqlite" * 100)
    with pytest.raises(oomguard.errors.NotAStoreError):
        SqliteStore(bogus)
    assert bogus.read_text().startswith("hello")


def test_status_json_lists_failures_with_evidence(tmp_path: Path, cli: RunCli) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text("\n".join(json.dumps({"message": f"boom {i}"}) for i in range(3)) + "\n")
    store = str(tmp_path / "s.sqlite")
    res = cli(
        "run",
        "oomguard.examples:fail",
        "--params",
        str(params),
        "--store",
        store,
        "--workers",
        "1",
        "--json",
    )
    assert res.returncode == 1, res.stderr
    summary = json.loads(res.stdout)
    assert summary["counts"]["failed"] == 3
    assert summary["failures_by_class"] == {"error": 3}
    res = cli("status", "--store", store, "--json")
    info = json.loads(res.stdout)
    tb = info["failures"][0]["attempts"][0]["evidence"]["traceback"]
    assert "RuntimeError: boom" in tb


def test_retry_failed_runs_failed_tasks_again(tmp_path: Path, cli: RunCli) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text(json.dumps({"message": "always"}) + "\n" + json.dumps({"x": 5}) + "\n")
    store = str(tmp_path / "s.sqlite")
    res = cli(
        "run",
        "oomguard.examples:fail",
        "--params",
        str(params),
        "--store",
        store,
        "--workers",
        "1",
        "--json",
    )
    assert res.returncode == 1
    job = json.loads(res.stdout)["job_id"]
    res = cli("retry", job, "--failed", "--store", store)
    assert res.returncode == 0 and "2 task(s) ready" in res.stdout
    res = cli(
        "run",
        "oomguard.examples:fail",
        "--params",
        str(params),
        "--store",
        store,
        "--workers",
        "1",
        "--json",
    )
    assert res.returncode == 1
    info = json.loads(cli("status", job, "--store", store, "--json").stdout)
    assert info["counts"]["failed"] == 2
    assert info["failures_by_class"] == {"error": 4}  # each task ran twice


def test_cancel_stops_running_and_queued_tasks(tmp_path: Path) -> None:
    with oomguard.Runner(store=str(tmp_path / "s.sqlite"), workers=1) as runner:
        job = runner.sweep("oomguard.examples:sleep", [{"seconds": 30.0} for _ in range(4)])
        wait_for(lambda: runner.store.queries.counts(job.id)["running"] >= 1)
        other = SqliteStore(tmp_path / "s.sqlite")
        assert other.admin.cancel(job.id) == 4
        other.close()
        status = job.wait(timeout=30, progress=False)
        assert status["counts"]["cancelled"] == 4
        assert status["state"] == "cancelled"


def test_unpicklable_argument_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    import threading

    with oomguard.Runner(store=str(tmp_path / "s.sqlite"), workers=1) as runner:
        with pytest.raises(oomguard.errors.PayloadError, match="cannot be pickled"):
            runner.submit("oomguard.examples:noop", threading.Lock())
        assert runner.store.jobs() == []


def test_timeout_kills_the_attempt_and_says_so(tmp_path: Path, cli: RunCli) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text(json.dumps({"seconds": 30}) + "\n" + json.dumps({"seconds": 0}) + "\n")
    store = str(tmp_path / "s.sqlite")
    res = cli(
        "run",
        "oomguard.examples:sleep",
        "--params",
        str(params),
        "--store",
        store,
        "--workers",
        "2",
        "--timeout",
        "0.5",
        "--json",
    )
    assert res.returncode == 1, res.stderr
    summary = json.loads(res.stdout)
    assert summary["failures_by_class"] == {"timeout": 1}
    info = json.loads(cli("status", "--store", store, "--json").stdout)
    (failure,) = info["failures"]
    assert failure["failure_class"] == "timeout"
    assert failure["attempts"][0]["evidence"]["timeout_s"] == 0.5


def test_wait_says_when_results_are_not_yet_written_to_parquet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with oomguard.Runner(store=str(tmp_path / "s.sqlite"), workers=1) as runner:
        # A scheduler that never gets round to its Parquet parts (a stuck disk, say).
        monkeypatch.setattr(runner.scheduler, "_write_parts", lambda final: None)
        job = runner.sweep("oomguard.examples:noop", [{"x": 1}, {"x": 2}], out=tmp_path / "o")
        with pytest.raises(TimeoutError, match="2 results were not yet written to"):
            job.wait(timeout=3, progress=False)
        assert job.status()["counts"]["succeeded"] == 2


def test_a_job_added_in_process_starts_without_the_periodic_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep or submit of the Runner tells its scheduler that tasks were added: the new
    job is taken at the next step, not when the loop next looks for jobs other processes
    added (here: never, within the test)."""
    from oomguard.scheduler import loop

    monkeypatch.setattr(loop, "ACTIVE_INTERVAL", 3600.0)
    looks = threading.Event()
    active_jobs = SqliteStore.active_jobs

    def looked(store: SqliteStore) -> list[str]:
        found = active_jobs(store)
        looks.set()
        return found

    told = threading.Event()
    tasks_added = loop.Scheduler.tasks_added

    def added(sched: loop.Scheduler) -> None:
        told.set()
        tasks_added(sched)

    # Spies set before the loop starts, so that its very first look is seen.
    monkeypatch.setattr(SqliteStore, "active_jobs", looked)
    monkeypatch.setattr(loop.Scheduler, "tasks_added", added)
    with oomguard.Runner(store=str(tmp_path / "s.sqlite"), workers=1) as r:
        r.start()
        # The loop's first look for jobs is over (none then): the next look, within the
        # test, is one that tasks_added forces; on a loaded machine too.
        wait_for(looks.is_set, what="the loop's first look for jobs")
        looks.clear()
        job = r.sweep("oomguard.examples:noop", [{"x": i} for i in range(3)])
        assert job.wait(timeout=60, progress=False)["counts"]["succeeded"] == 3
        assert told.is_set() and looks.is_set()
        told.clear()
        one = r.submit("oomguard.examples:noop", 7)
        assert one.wait(timeout=60, progress=False)["counts"]["succeeded"] == 1
        assert told.is_set()


def test_the_loop_sleeps_while_attempts_run_and_wakes_for_new_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While an attempt runs for seconds the loop wakes a few times a second, not 20; a
    job added meanwhile wakes it at once (here the loop would otherwise sleep on until the
    long attempt ends), and so does closing the Runner."""
    with oomguard.Runner(store=str(tmp_path / "s.sqlite"), workers=2) as r:
        r.start()
        assert r.scheduler is not None
        sched = r.scheduler
        steps = 0
        step = sched.step

        def counted(timeout: float | None = None) -> None:
            nonlocal steps
            steps += 1
            step(timeout)

        monkeypatch.setattr(sched, "step", counted)
        long = r.sweep("oomguard.examples:sleep", [{"seconds": 120.0}])
        wait_for(lambda: long.status()["counts"]["running"] == 1, what="the long attempt")
        time.sleep(0.5)  # the loop waits on the long attempt
        steps = 0
        time.sleep(1.0)
        assert steps <= 1.0 / sched.idle_wait + 2  # was 20 or more at the 50 ms pace
        # The loop's next wait is for ever (as good as): only a wake ends it before the
        # long attempt does, 2 minutes from now.
        monkeypatch.setattr(sched, "idle_wait", 3600.0)
        time.sleep(0.5)
        quick = r.submit("oomguard.examples:noop", 1)
        assert quick.wait(timeout=100, progress=False)["counts"]["succeeded"] == 1
        # Woken by the submission: the quick one ran while the long one runs on.
        assert long.status()["counts"]["running"] == 1
    # Closing woke it too: the long attempt was interrupted, not waited for.
    db = sqlite3.connect(tmp_path / "s.sqlite")
    try:
        states = [
            state
            for (state,) in db.execute(
                "SELECT a.state FROM attempts a JOIN tasks t ON t.id = a.task_id "
                "WHERE t.job_id = ?",
                (long.id,),
            )
        ]
    finally:
        db.close()
    assert states == ["interrupted"], states
