"""One suite, every executor: the local worker pool and a real Dask cluster (``dask
scheduler`` + ``dask worker --nworkers 2 --nthreads 1 --memory-limit 1GiB`` on 127.0.0.1,
allowed-failures 0) run the same small jobs with the same outcomes."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import oomguard
from fixtures import contract_tasks as ct
from fixtures.dask_cluster import MIB, dask_cluster
from oomguard.jobs.status import Failure

pytestmark = pytest.mark.timeout(120)

EXECUTORS = ["local", pytest.param("dask", marks=pytest.mark.dask)]


@pytest.fixture(scope="module")
def dask_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if importlib.util.find_spec("distributed") is None:
        pytest.skip("the dask executor needs dask[distributed] (pip install 'oomguard[dask]')")
    with dask_cluster(tmp_path_factory.mktemp("dask"), memory_limit=1024 * MIB) as address:
        yield address


@pytest.fixture(params=EXECUTORS)
def runner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[oomguard.Runner]:
    """A Runner on a temp store with 2 workers, on each executor in turn."""
    extra: dict[str, Any] = {}
    if request.param == "dask":
        extra["dask_address"] = request.getfixturevalue("dask_address")
    with oomguard.Runner(
        store=str(tmp_path / "store.sqlite"), workers=2, executor=request.param, **extra
    ) as run:
        yield run


def _only_failure(job: oomguard.Job) -> Failure:
    status = job.wait(timeout=60, progress=False)
    assert status["state"] != "running", status
    (failure,) = job.failures()
    return failure


def test_sweep_with_replicates_and_aggregation(runner: oomguard.Runner, tmp_path: Path) -> None:
    job = runner.sweep(
        ct.square,
        ({"x": x} for x in range(6)),
        replicates=3,
        aggregate=ct.add_up,
        out=str(tmp_path / "out"),
    )
    status = job.wait(timeout=60, progress=False)
    assert status["state"] == "succeeded", status
    assert status["counts"]["succeeded"] == 6 * 3 + 6
    tasks = job.results().to_pylist()
    assert sorted((r["x"], r["replicate"], r["y"]) for r in tasks) == sorted(
        (x, rep, x * x + rep) for x in range(6) for rep in range(3)
    )
    aggs = job.results("aggregate").to_pylist()
    assert sorted((r["x"], r["total"], r["n"]) for r in aggs) == [
        (x, 3 * x * x + 3, 3) for x in range(6)
    ]


def test_task_that_raises_is_an_error_with_its_traceback(runner: oomguard.Runner) -> None:
    failure = _only_failure(runner.sweep(ct.fails, [{"x": 7}]))
    assert failure["failure_class"] == "error"
    (attempt,) = failure["attempts"]
    assert attempt["failure_class"] == "error"
    traceback = attempt["evidence"]["traceback"]
    assert "ValueError: bad input 7" in traceback
    assert "in fails" in traceback


def test_task_past_its_timeout_ends_timeout(runner: oomguard.Runner) -> None:
    failure = _only_failure(runner.submit(ct.sleeps, 10.0))
    assert failure["failure_class"] == "timeout"
    assert {a["failure_class"] for a in failure["attempts"]} == {"timeout"}


def test_submit_with_pickled_arguments(runner: oomguard.Runner) -> None:
    job = runner.submit(ct.describe, {3, 1, 2}, 10)
    status = job.wait(timeout=60, progress=False)
    assert status["state"] == "succeeded", status
    (row,) = job.results().to_pylist()
    assert row["items"] == [1, 2, 3]
    assert row["scaled"] == [10, 20, 30]


def test_memory_error_is_memory_error(runner: oomguard.Runner) -> None:
    failure = _only_failure(runner.sweep(ct.no_memory, [{"x": 1}]))
    # A worker is recycled after a MemoryError. On Dask a retry queued on it when it is
    # restarted is handed back unstarted ("skipped", no class), never counted as killed.
    # Every outcome the task itself reported (with its traceback) is memory_error.
    reported = [a for a in failure["attempts"] if (a["evidence"] or {}).get("traceback")]
    assert reported and {a["failure_class"] for a in reported} == {"memory_error"}
    others = {a["failure_class"] for a in failure["attempts"] if a not in reported}
    assert others <= {None}, failure["attempts"]
    # A MemoryError counts as running out of memory: retried larger, then given up on.
    assert failure["failure_class"] in ("memory_error", "needs_more_memory")


MIXED = [{"kind": "ok", "x": x} for x in range(8)] + [
    {"kind": kind, "x": 100 + i}
    for i, kind in enumerate(["error", "memory_error", "oom", "timeout"])
]


def _mixed_run(
    executor: str, tmp_path: Path, extra: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[int, list[str | None]]]:
    out = tmp_path / executor
    with oomguard.Runner(
        store=str(tmp_path / f"{executor}.sqlite"),
        workers=2,
        executor=executor,
        worker_memory="256MiB",
        **extra,
    ) as run:
        job = run.sweep(ct.mixed, MIXED, out=str(out))
        status = job.wait(timeout=240, progress=False)
        classes = {
            f["params"]["x"]: [a["failure_class"] for a in f["attempts"] if a["state"] != "skipped"]
            for f in job.failures()
        }
        finals = {f["params"]["x"]: f["failure_class"] for f in job.failures()}
    rows = sorted(pq.ParquetDataset(out / "tasks").read().to_pylist(), key=lambda r: r["x"])
    return dict(status, finals=finals), rows, classes


def test_mixed_job_ends_the_same_on_every_executor(
    tmp_path: Path, require_cgroup: None, dask_address: str
) -> None:
    """Succeeded, error, MemoryError, OOM kill and timeout: the same final classes, the
    same Parquet rows and the same OOM kills on the local pool and on Dask, where each
    attempt runs in its own memory cgroup on the worker host."""
    local = _mixed_run("local", tmp_path, {})
    dask = _mixed_run("dask", tmp_path, {"dask_address": dask_address})
    for status, rows, classes in (local, dask):
        assert status["counts"]["succeeded"] == 8 and status["counts"]["failed"] == 4, status
        assert status["finals"] == {
            100: "error",
            101: status["finals"][101],
            102: "needs_more_memory",
            103: "timeout",
        }
        assert status["finals"][101] in ("memory_error", "needs_more_memory")
        assert [r["y"] for r in rows] == [3 * x for x in range(8)]
        assert set(classes[102]) == {"oom_cgroup"}, classes
        assert set(classes[101]) == {"memory_error"}, classes
    assert dask[0]["finals"] == local[0]["finals"]
    assert dask[0]["failures_by_class"] == local[0]["failures_by_class"]
    assert dask[1] == local[1]
    assert dask[2] == local[2]
