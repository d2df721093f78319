"""Real kernel, real cgroup: workers are OOM-killed alone and every kill is explained."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import oomguard
from fixtures.polling import wait_for
from oomguard.executors.local import LocalExecutor

if TYPE_CHECKING:
    from conftest import RunCli

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]


def _params(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("isolation", ["cgroup", "watchdog"])
def test_sweep_with_tasks_beyond_worker_memory(
    tmp_path: Path, cli: RunCli, require_cgroup: None, isolation: str
) -> None:
    rows = [{"mib": 1024 if i % 8 == 3 else 8, "tag": i} for i in range(40)]
    params = _params(tmp_path / "p.jsonl", rows)
    store = str(tmp_path / "s.sqlite")
    res = cli(
        "run",
        "oomguard.examples:allocate",
        "--params",
        params,
        "--store",
        store,
        "--worker-memory",
        "256MiB",
        "--workers",
        "2",
        "--isolation",
        isolation,
        "--json",
    )
    # The scheduler was untouched: it finished and reported (exit 1: some tasks failed).
    assert res.returncode == 1, res.stderr
    summary = json.loads(res.stdout)
    assert summary["counts"]["succeeded"] == 35
    assert summary["counts"]["failed"] == 5
    expected = "oom_cgroup" if isolation == "cgroup" else "oom_watchdog"
    # Without --memory-key all tasks share one learned estimate (the small tasks'), so a
    # big task may be killed at a smaller limit first, then retried up to --worker-memory.
    assert set(summary["failures_by_class"]) == {expected}
    assert summary["failures_by_class"][expected] >= 5
    info = json.loads(cli("status", "--store", store, "--json").stdout)
    assert len(info["failures"]) == 5
    for failure in info["failures"]:
        assert failure["params"]["mib"] == 1024
        assert failure["failure_class"] == "needs_more_memory"
        attempt = failure["attempts"][-1]
        assert attempt["failure_class"] == expected
        ev = attempt["evidence"]
        assert ev["signal_name"] == "SIGKILL"
        assert attempt["limit_bytes"] == 256 * 1024**2
        if isolation == "cgroup":
            assert ev["cgroup_after"]["oom_kill"] == ev["cgroup_before"]["oom_kill"] + 1
            assert any(
                f"Killed process {attempt['pid']} " in line for line in ev["kernel_lines"]
            ), ev.get("kernel_lines")
            assert ev["kernel"]["victim_pid"] == attempt["pid"]
        else:
            assert ev["killed_by_oomguard"] == "watchdog"
            assert ev["rss_bytes"] > ev["limit_bytes"]


@pytest.mark.parametrize("isolation", ["cgroup", "watchdog"])
def test_child_process_blowing_the_limit_is_caught(
    tmp_path: Path, require_cgroup: None, isolation: str
) -> None:
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"), workers=1, isolation=isolation, worker_memory="256MiB"
    ) as runner:
        job = runner.sweep("fixtures.tasks:alloc_in_child", [{"mib": 1024}, {"mib": 8}])
        status = job.wait(timeout=120, progress=False)
        assert status["counts"] == {**status["counts"], "succeeded": 1, "failed": 1}
        failure = job.failures()[0]
        assert failure["params"] == {"mib": 1024}
        cls = failure["attempts"][0]["failure_class"]
        assert cls == ("oom_cgroup" if isolation == "cgroup" else "oom_watchdog")


def test_memory_error_is_classified_and_worker_recycled(tmp_path: Path) -> None:
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"), workers=1, isolation="watchdog"
    ) as runner:
        job = runner.submit("fixtures.tasks:raise_memory_error")
        job.wait(timeout=60, progress=False)
        failure = job.failures()[0]
        classes = {a["failure_class"] for a in failure["attempts"]}
        assert classes == {"memory_error"}
        # An allocation failure is retried with more memory, like an OOM kill.
        assert failure["failure_class"] == "needs_more_memory"
        # The worker is retired on the "idle" message that follows the outcome, so the
        # counter may move one poll after the task became final.
        assert runner.scheduler is not None and runner.scheduler.executor is not None
        recycles = runner.scheduler.executor.recycles
        n = len(failure["attempts"])
        assert wait_for(lambda: recycles.get("memory_error", 0) >= n, timeout=10)
        assert recycles["memory_error"] == n


def test_fragmentation_growth_is_bounded_by_recycling(tmp_path: Path) -> None:
    # Each task keeps ~1/5 of 200k small objects alive: RSS grows ~6 MiB a task.
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"),
        workers=1,
        isolation="watchdog",
        worker_memory="128MiB",
        recycle_growth_fraction=0.25,
    ) as runner:
        job = runner.sweep(
            "fixtures.tasks:fragment", ({"i": i, "keep_every": 5} for i in range(20))
        )
        job.wait(timeout=120, progress=False)
        assert runner.scheduler is not None and runner.scheduler.executor is not None
        recycles = runner.scheduler.executor.recycles
        assert wait_for(lambda: recycles.get("rss_growth", 0) >= 1, timeout=10)
        kept = [r["result"] for r in job.results().to_pylist()]
    # One worker running all 20 would keep 20 x 40,000 objects; recycled workers start
    # from nothing, so no worker ever held more than a few tasks' worth.
    per_task = 200_000 // 5
    assert max(kept) <= 5 * per_task < 20 * per_task
    assert max(kept) * 160 < 128 * 1024**2


def test_workers_raise_their_oom_score_adj(tmp_path: Path) -> None:
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"), workers=1, worker_oom_score_adj=700
    ) as runner:
        assert runner.scheduler is not None
        executor = runner.scheduler.executor
        assert isinstance(executor, LocalExecutor)
        pool = executor.pool
        (worker,) = pool.workers.values()
        assert Path(f"/proc/{worker.pid}/oom_score_adj").read_text().strip() == "700"
        assert Path(f"/proc/{os.getpid()}/oom_score_adj").read_text().strip() != "700"
