"""The Dask executor end to end: a real ``dask scheduler`` and real ``dask worker``
processes on 127.0.0.1 (two 512 MiB workers with a MEMORY resource), real nanny
memory-limit restarts, a real SIGKILL of a worker process."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import oomguard
from fixtures.dask_cluster import dask_cluster, wait_workers, worker_pids
from fixtures.polling import wait_for
from oomguard.executors.dask.backlog import GROUP_MAX_ITEMS
from oomguard.jobs.jsonvalue import JSON

pytestmark = [pytest.mark.dask, pytest.mark.timeout(180)]

distributed = pytest.importorskip(
    "distributed",
    reason="the dask executor tests need dask[distributed] (pip install 'oomguard[dask]')",
)

MIB = 1024 * 1024
WORKER_MEMORY = 512 * MIB


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dask scheduler`` + ``dask worker --nworkers 2 --memory-limit 512MiB``."""
    with dask_cluster(tmp_path_factory.mktemp("dask"), memory_limit=WORKER_MEMORY) as address:
        yield address


def _rows(directory: Path) -> list[dict[str, Any]]:
    rows = pq.ParquetDataset(directory).read().to_pylist()
    for row in rows:
        row.pop("attempts")
    return sorted(
        rows,
        key=lambda r: (r["group"], r.get("replicate") if r.get("replicate") is not None else -1),
    )


def test_sweep_on_dask_writes_the_same_rows_as_the_local_pool(cluster: str, tmp_path: Path) -> None:
    params = [{"n_agents": 20 + i, "steps": 5} for i in range(30)]
    outs = {}
    for executor in ("local", "dask"):
        out = tmp_path / executor
        with oomguard.Runner(
            store=str(tmp_path / f"{executor}.sqlite"),
            workers=2,
            executor=executor,
            dask_address=cluster,
        ) as runner:
            job = runner.sweep(
                "oomguard.examples:simulate",
                params,
                replicates=3,
                aggregate="oomguard.examples:mean_of",
                out=str(out),
            )
            status = job.wait(timeout=60, progress=False)
            assert status["state"] == "succeeded", status
            assert status["counts"]["succeeded"] == 120
            if executor == "dask":
                from oomguard.executors.dask.executor import DaskExecutor

                assert runner.scheduler is not None
                executor_obj = runner.scheduler.executor
                assert isinstance(executor_obj, DaskExecutor)
                # The window, never the job: a few Dask tasks per worker thread, each of
                # a bounded group of attempts.
                window = executor_obj.window
                assert executor_obj.counters.max_futures_in_flight <= window
                assert executor_obj.counters.max_in_flight <= window * GROUP_MAX_ITEMS
                assert executor_obj.has_memory
                assert not executor_obj.inflight
        outs[executor] = out
    for kind in ("tasks", "aggregates"):
        assert _rows(outs["dask"] / kind) == _rows(outs["local"] / kind)


def test_task_over_the_worker_memory_is_classified_and_ends_needing_more_memory(
    cluster: str, tmp_path: Path
) -> None:
    params = [{"mib": 2048.0 if i == 3 else 1.0} for i in range(12)]
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"),
        workers=2,
        executor="dask",
        dask_address=cluster,
        memory_key="mib",
    ) as runner:
        job = runner.sweep("oomguard.examples:allocate", params)
        status = job.wait(timeout=90, progress=False)
        assert status["counts"]["succeeded"] == 11
        assert status["counts"]["failed"] == 1
        (failure,) = job.failures()
        assert failure["params"] == {"mib": 2048.0}
        assert failure["failure_class"] == "needs_more_memory"
        classes = [a["failure_class"] for a in failure["attempts"]]
        oom = {"oom_watchdog", "oom_cgroup", "oom_system"}
        assert len(classes) >= 1 and set(classes) <= oom, classes  # cap = largest worker MEMORY
        evidence = failure["attempts"][0]["evidence"]
        assert evidence["executor"] == "dask" and evidence["pid"]
        assert evidence["worker_memory_limit"] == WORKER_MEMORY
    wait_workers(cluster)


def test_worker_sigkilled_mid_job_loses_nothing_and_recomputes_nothing(
    cluster: str, tmp_path: Path
) -> None:
    wait_workers(cluster)
    markers = tmp_path / "m"
    markers.mkdir()
    params = [{"x": i, "marker_dir": str(markers), "seconds": 0.05} for i in range(40)]
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"), workers=2, executor="dask", dask_address=cluster
    ) as runner:
        job = runner.sweep(
            "fixtures.tasks:counted",
            params,
            replicates=2,
            aggregate="fixtures.tasks:total",
            out=str(tmp_path / "out"),
        )
        wait_for(lambda: job.status()["counts"]["succeeded"] >= 20, timeout=60)
        victim = sorted(worker_pids(cluster).values())[0]
        os.kill(victim, signal.SIGKILL)
        status = job.wait(timeout=60, progress=False)
        assert status["state"] == "succeeded", status
        assert status["counts"]["succeeded"] == 120
        assert set(status["failures_by_class"]) <= {"killed"}
        killed = sum(status["failures_by_class"].values())
    runs = Counter(p.name.rsplit("-", 1)[0] for p in markers.iterdir())
    tasks = pq.ParquetDataset(tmp_path / "out" / "tasks").read().to_pylist()
    assert len(tasks) == 80
    for row in tasks:
        # Every execution is one of oomguard's attempts (nothing ran behind its back, nothing
        # that had finished ran again); a killed attempt may have died before its side effect.
        n = runs[f"{row['x']}-{row['replicate']}"]
        assert row["attempts"] - 1 <= n <= row["attempts"], (row, n)
    assert sum(runs.values()) <= 80 + killed
    assert sum(r["attempts"] for r in tasks) <= 80 + killed
    aggs = pq.ParquetDataset(tmp_path / "out" / "aggregates").read().to_pylist()
    assert sorted(r["sum_y"] for r in aggs) == sorted(4 * x for x in range(40))
    wait_workers(cluster)


RECYCLE_CASES: dict[str, list[dict[str, Any]]] = {
    # The first group's first task raises MemoryError and its second returns 96 MiB:
    # while the scheduler loop writes that result to its blob file, the worker runs the
    # groups behind it. Their results must be gathered before the worker is restarted.
    # (First one quick task: the function's first attempt runs alone, as a probe.)
    "finished_behind_it": [
        {"x": -1},
        {"x": 0, "fail": True},
        {"x": 1, "result_mib": 96.0},
        *({"x": i} for i in range(2, 60)),
    ],
    # Groups of 0.1 s tasks: when the worker is recycled, one runs (it finishes and is
    # gathered first) and the others wait there, never started (they are requeued).
    "queued_behind_it": [{"x": -1}, {"x": 0, "fail": True}]
    + [{"x": i, "seconds": 0.1} for i in range(1, 40)],
}


@pytest.mark.parametrize("case", sorted(RECYCLE_CASES))
def test_a_worker_recycled_after_a_memory_error_takes_no_queued_task_with_it(
    case: str, tmp_path: Path
) -> None:
    # One single-thread worker running attempts in its own thread (``thread`` mode: in
    # the other modes attempts run in the worker's children, and a child, not the Dask
    # worker, is recycled); the tasks of one function queue there in groups, one
    # behind the other. oomguard recycles the worker after the MemoryError: what ran
    # behind it is gathered first, what waited there is handed back unstarted, and no
    # attempt is lost with the worker and counted as killed.
    from oomguard.executors.dask.executor import RECYCLED

    params = RECYCLE_CASES[case]
    base = tmp_path / "cluster"
    base.mkdir()
    with (
        dask_cluster(base, nworkers=1, memory_limit=2048 * MIB) as address,
        oomguard.Runner(
            store=str(tmp_path / "s.sqlite"),
            workers=1,
            executor="dask",
            dask_address=address,
            dask_window_per_thread=16,
            dask_isolation="thread",
        ) as runner,
    ):
        job = runner.sweep("fixtures.tasks:quick_or_memory_error", params)
        status = job.wait(timeout=120, progress=False)
        assert runner.scheduler is not None and runner.scheduler.executor is not None
        recycles = dict(runner.scheduler.executor.recycles)
        attempts = list(runner.store.queries.all_attempts(job.id))
        skipped = [
            runner.store.queries.attempts(a.task_id) for a in attempts if a.state == "skipped"
        ]
    assert status["counts"]["succeeded"] == len(params) - 1, status
    assert status["counts"]["failed"] == 1, status
    # Every failed attempt is the MemoryError task's own; the others ended with their
    # outcome, or were handed back unstarted ("skipped", no class, not an attempt).
    assert set(status["failures_by_class"]) == {"memory_error"}, status["failures_by_class"]
    assert {(a.state, a.failure_class) for a in attempts} <= {
        ("succeeded", None),
        ("skipped", None),
        ("failed", "memory_error"),
    }
    reasons: set[JSON] = set()
    for task in skipped:
        for a in task:
            if a.state == "skipped":
                assert isinstance(a.evidence, dict), a.evidence
                reasons.add(a.evidence["reason"])
    assert reasons <= {RECYCLED}, reasons
    if case == "queued_behind_it":
        assert reasons == {RECYCLED}
    assert recycles.get("memory_error", 0) >= 1, recycles


def test_doctor_says_how_each_dask_worker_isolates_attempts(cluster: str) -> None:
    import json
    import subprocess
    import sys

    main = [sys.executable, "-m", "oomguard.cli.main", "doctor"]
    done = subprocess.run(
        [*main, "--json", "--dask-address", cluster], capture_output=True, text=True, timeout=120
    )
    assert done.returncode in (0, 11), done.stderr
    workers = json.loads(done.stdout)["dask_workers"]
    assert len(workers) == 2
    expected = {"cgroup-v1", "cgroup-v2", "watchdog"}
    assert {info["mode"] for info in workers.values()} <= expected, workers
    text = subprocess.run(
        [*main, "--dask-address", cluster], capture_output=True, text=True, timeout=120
    ).stdout
    assert f"dask cluster {cluster}: 2 worker(s)" in text
    # A cluster that cannot be reached: said, exit 10, no traceback.
    gone = subprocess.run(
        [*main, "--dask-address", "tcp://127.0.0.1:9"], capture_output=True, text=True, timeout=120
    )
    assert gone.returncode == 10, gone.stderr
    assert "cannot connect to the Dask scheduler" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_a_second_runner_on_the_cluster_leaves_the_first_ones_attempts_running(
    cluster: str, tmp_path: Path
) -> None:
    # Each Runner registers oomguard's worker plugin again; the Dask workers keep their
    # pools (same settings), so the children running the first Runner's attempts live on.
    wait_workers(cluster)
    pids = tmp_path / "pids"
    pids.mkdir()
    with oomguard.Runner(
        store=str(tmp_path / "a.sqlite"), workers=2, executor="dask", dask_address=cluster
    ) as first:
        slow = first.sweep(
            "fixtures.tasks:pid_then_sleep", [{"x": 1, "pid_dir": str(pids), "seconds": 3.0}]
        )
        wait_for(lambda: (pids / "1.pid").exists(), timeout=60)  # running in its child
        with oomguard.Runner(
            store=str(tmp_path / "b.sqlite"), workers=2, executor="dask", dask_address=cluster
        ) as second:
            quick = second.sweep("fixtures.tasks:sleep_then", [{"x": 2}])
            assert quick.wait(timeout=60, progress=False)["state"] == "succeeded"
        status = slow.wait(timeout=60, progress=False)
        attempts = list(first.store.queries.all_attempts(slow.id))
    assert status["state"] == "succeeded", status
    # One attempt, one run: it was never killed and run again.
    assert [a.state for a in attempts] == ["succeeded"], attempts
    assert len(list(pids.glob("1-*.run"))) == 1


def test_watchdog_mode_kills_an_outgrowing_attempt_alone(cluster: str, tmp_path: Path) -> None:
    # Where no cgroup can be made on the worker host, the children run under the RSS
    # watchdog: the task is killed at its limit (oom_watchdog), the Dask worker lives on.
    wait_workers(cluster)
    before = worker_pids(cluster)
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"),
        workers=2,
        executor="dask",
        dask_address=cluster,
        dask_isolation="watchdog",
        worker_memory="256MiB",
    ) as runner:
        from oomguard.executors.dask.executor import DaskExecutor

        assert runner.scheduler is not None
        executor = runner.scheduler.executor
        assert isinstance(executor, DaskExecutor)
        assert set(executor.isolation_modes.values()) == {"watchdog"}
        job = runner.sweep("oomguard.examples:allocate", [{"mib": 1024.0}, {"mib": 1.0}])
        status = job.wait(timeout=120, progress=False)
        (failure,) = job.failures()
    assert status["counts"]["succeeded"] == 1, status
    assert failure["failure_class"] == "needs_more_memory"
    attempts = failure["attempts"]
    assert {a["failure_class"] for a in attempts} == {"oom_watchdog"}
    ev = attempts[-1]["evidence"]
    assert ev["isolation"] == "watchdog" and ev["killed_by_oomguard"] == "watchdog"
    assert ev["rss_bytes"] > ev["limit_bytes"] == 256 * MIB
    assert worker_pids(cluster) == before


def test_a_finished_key_whose_worker_died_before_it_was_gathered_is_refused_not_rerun(
    cluster: str, tmp_path: Path
) -> None:
    # The scheduler's start guard: a key of oomguard's that finished on a worker that then
    # died is recomputed by Dask elsewhere; it runs nothing there and answers
    # "duplicate" (no Dask task asks the scheduler before it runs).
    import uuid

    from fixtures.tasks import counted
    from oomguard.executors.dask.cluster import register_start_guard
    from oomguard.executors.dask.remote import KEY_PREFIX
    from oomguard.executors.dask.remote.answers import GroupAnswer

    wait_workers(cluster)
    markers = tmp_path / "m"
    markers.mkdir()
    pids = worker_pids(cluster)
    victim = sorted(pids)[0]
    with distributed.Client(cluster, timeout="20s", set_as_default=False) as client:
        assert register_start_guard(client)
        assert register_start_guard(client)  # the next Runner finds it there
        future = client.submit(
            counted,
            1,
            str(markers),
            key=f"{KEY_PREFIX}test-{uuid.uuid4().hex[:8]}",
            workers=[victim],
            allow_other_workers=True,
            pure=False,
        )
        wait_for(lambda: future.status == "finished", timeout=60)
        os.kill(pids[victim], signal.SIGKILL)
        answer = future.result(timeout=60)
        assert isinstance(answer, GroupAnswer), answer
        assert answer.duplicate and not answer.outcomes
        assert answer.worker is not None and answer.worker != victim
        # It ran once: on the worker that died.
        assert len(list(markers.iterdir())) == 1
        future.release()
    wait_workers(cluster)


def test_each_dask_task_names_its_key_to_the_scheduler_as_it_starts(
    cluster: str, tmp_path: Path
) -> None:
    # Without a round trip: on the worker's stream (a scheduler event the guard reads).
    from oomguard.executors.dask.cluster import started_on_worker

    wait_workers(cluster)
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"), workers=2, executor="dask", dask_address=cluster
    ) as runner:
        job = runner.sweep("fixtures.tasks:sleep_then", [{"x": i} for i in range(3)])
        assert job.wait(timeout=60, progress=False)["state"] == "succeeded"
        assert runner.scheduler is not None
        executor = runner.scheduler.executor
        from oomguard.executors.dask.executor import DaskExecutor

        assert isinstance(executor, DaskExecutor) and executor.guarded
        # The workers are on 127.0.0.1: answers come straight from them.
        assert executor.direct
        attempts = list(runner.store.queries.all_attempts(job.id))
        keys = {f"{executor.prefix}-{a.attempt_id}" for a in attempts}
        wait_for(lambda: any(started_on_worker(executor.client, key) for key in keys), timeout=30)
        assert not started_on_worker(executor.client, f"{executor.prefix}-never-sent")


def test_an_aggregation_takes_the_results_another_worker_holds_straight_from_it(
    cluster: str,
) -> None:
    import json
    import pickle

    from oomguard.executors.dask.remote import PLUGIN_NAME
    from oomguard.executors.dask.remote.tasks import run_calls
    from oomguard.executors.dask.remote.worker_plugin import WorkerEvidencePlugin
    from oomguard.worker.calls import AggregateCall, HeldRef, JsonCall

    wait_workers(cluster)
    with distributed.Client(cluster, set_as_default=False) as client:
        client.register_plugin(WorkerEvidencePlugin(kernel_log_wait=0.0), name=PLUGIN_NAME)
        a, b = sorted(client.scheduler_info()["workers"])
        reps = [
            JsonCall(i, "fixtures.tasks:sleep_then", json.dumps({"x": i}), hold=True)
            for i in (1, 2)
        ]
        made = client.submit(run_calls, reps, guarded=True, workers=[a], pure=False).result()
        assert made.worker == a and made.held == (1, 2), made
        # On b, referring to the results a holds: b takes them from a, a gives them up.
        agg = AggregateCall(3, "fixtures.tasks:total", None, (HeldRef(1), HeldRef(2)))
        peers = {1: a, 2: a}
        out = client.submit(
            run_calls, [agg], guarded=True, peers=peers, workers=[b], pure=False
        ).result()
        assert out.worker == b and out.fetched == 2 and not out.missing, out
        (result,) = out.outcomes
        assert result.ok and result.payload is not None
        assert pickle.loads(result.payload) == {"sum_y": 3, "n": 2}
        # Used once: asked again, a holds nothing, and nothing runs on b.
        again = AggregateCall(4, "fixtures.tasks:total", None, (HeldRef(1),))
        out = client.submit(
            run_calls, [again], guarded=True, peers=peers, workers=[b], pure=False
        ).result()
        assert out.missing and out.fetched == 0 and not out.outcomes, out
