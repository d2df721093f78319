"""The Dask executor end to end: a real ``dask scheduler`` and real ``dask worker``
processes on 127.0.0.1 (two 512 MiB workers with a MEMORY resource), real nanny
memory-limit restarts, a real SIGKILL of a worker process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import oomguard

pytestmark = [pytest.mark.dask, pytest.mark.timeout(180)]

distributed = pytest.importorskip(
    "distributed",
    reason="the dask executor tests need dask[distributed] (pip install 'oomguard[dask]')",
)

MIB = 1024 * 1024
WORKER_MEMORY = 512 * MIB


def _dask_cli() -> list[str]:
    exe = Path(sys.executable).parent / "dask"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("dask")
    if found is None:
        pytest.skip("the dask command line (dask[distributed]) is not installed")
    return [found]


def _wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    # The nannies and worker processes are in the session we started for it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dask scheduler`` + ``dask worker --nworkers 2 --memory-limit 512MiB``."""
    base = tmp_path_factory.mktemp("dask")
    dask = _dask_cli()
    env = dict(
        os.environ,
        # oomguard does its own retries: Dask must not rerun attempts behind its back.
        DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0",
        DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION="1.0",
    )
    sched_file = base / "scheduler.json"
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        log = (base / "scheduler.log").open("wb")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [
                    *dask,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(sched_file),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        _wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0)
        log = (base / "worker.log").open("wb")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [
                    *dask,
                    "worker",
                    "--scheduler-file",
                    str(sched_file),
                    "--nworkers",
                    "2",
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    "512MiB",
                    "--resources",
                    f"MEMORY={WORKER_MEMORY}",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                    "--local-directory",
                    str(base / "workers"),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        with distributed.Client(
            scheduler_file=str(sched_file), timeout="20s", set_as_default=False
        ) as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        yield address
    finally:
        for proc in reversed(procs):
            _reap(proc)
        for log in logs:
            log.close()


def _worker_pids(address: str) -> dict[str, int]:
    with distributed.Client(address, timeout="20s", set_as_default=False) as client:
        return {addr: int(pid) for addr, pid in client.run(os.getpid).items()}


def _wait_workers(address: str, n: int = 2) -> None:
    with distributed.Client(address, timeout="20s", set_as_default=False) as client:
        client.wait_for_workers(n, timeout=60)


def _rows(directory: Path) -> list[dict[str, Any]]:
    rows = pq.ParquetDataset(directory).read().to_pylist()
    for row in rows:
        row.pop("attempts")
    return sorted(
        rows, key=lambda r: (r["group"], r["replicate"] if r["replicate"] is not None else -1)
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
                executor_obj = runner.scheduler.executor
                # The window, never the job: 2 x 2 worker threads.
                assert executor_obj.counters.max_in_flight <= 4
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
    _wait_workers(cluster)


def test_worker_sigkilled_mid_job_loses_nothing_and_recomputes_nothing(
    cluster: str, tmp_path: Path
) -> None:
    _wait_workers(cluster)
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
        _wait_for(lambda: job.status()["counts"]["succeeded"] >= 20, timeout=60)
        victim = sorted(_worker_pids(cluster).values())[0]
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
    _wait_workers(cluster)
