"""Real ``dask scheduler`` and ``dask worker`` processes, a real kernel and real memory
cgroups: on each Dask worker every attempt runs in a child process in its own memory
cgroup below the Dask worker's, so a task that outgrows its limit is killed alone."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import oomguard
from fixtures.dask_cluster import MIB, dask_cluster, worker_pids
from fixtures.polling import wait_for

pytestmark = [pytest.mark.system, pytest.mark.dask, pytest.mark.timeout(300)]

distributed = pytest.importorskip(
    "distributed",
    reason="the dask executor tests need dask[distributed] (pip install 'oomguard[dask]')",
)

WORKER_MEMORY = 256 * MIB
BIG = 7


def _own_cgroup(pid: int) -> Path:
    from oomguard.cgroups.locate import locate_memory_cgroup

    version, directory, _, reason = locate_memory_cgroup(pid=pid)
    assert version is not None and directory is not None, reason
    return directory


def _run_dirs(owns: dict[int, Path]) -> list[Path]:
    """The cgroup subtrees oomguard made below each Dask worker process's own cgroup."""
    found = []
    for pid, own in owns.items():
        found += [p for p in own.iterdir() if p.name.startswith(f"oomguard-{pid}-")]
    return found


def test_task_over_the_limit_is_killed_alone_in_its_cgroup_on_the_worker_host(
    tmp_path: Path, require_cgroup: None
) -> None:
    markers = tmp_path / "m"
    markers.mkdir()
    params = [
        {"x": x, "marker_dir": str(markers), "mib": 1024.0 if x == BIG else 1.0, "seconds": 0.05}
        for x in range(24)
    ]
    base = tmp_path / "cluster"
    base.mkdir()
    with dask_cluster(base, nworkers=2, memory_limit=WORKER_MEMORY) as address:
        before = worker_pids(address)
        owns = {pid: _own_cgroup(pid) for pid in before.values()}
        with oomguard.Runner(
            store=str(tmp_path / "s.sqlite"),
            workers=2,
            executor="dask",
            dask_address=address,
            worker_memory="256MiB",
            # Declared small: the big task is killed at a smaller limit first, then escalated.
            task_memory="64MiB",
        ) as runner:
            from oomguard.executors.dask.executor import DaskExecutor

            assert runner.scheduler is not None
            executor = runner.scheduler.executor
            assert isinstance(executor, DaskExecutor)
            assert set(executor.isolation_modes.values()) <= {"cgroup-v1", "cgroup-v2"}, (
                executor.isolation_modes
            )
            job = runner.sweep("fixtures.tasks:counted_alloc", params, out=str(tmp_path / "out"))
            # /metrics says each Dask worker's mode (oomguard_worker_isolation) from this.
            wait_for(lambda: runner.view().worker_isolation == executor.isolation_modes)
            assert set(runner.view().worker_isolation) == set(before)
            status = job.wait(timeout=240, progress=False)
            failures = job.failures()
            counters, recycles = executor.counters, dict(executor.recycles)
            # The children's cgroups exist while the Dask workers run.
            assert len(_run_dirs(owns)) == 2
        after = worker_pids(address)
    assert status["counts"]["succeeded"] == 23, status
    assert status["counts"]["failed"] == 1, status
    (failure,) = failures
    assert failure["params"]["x"] == BIG
    assert failure["failure_class"] == "needs_more_memory"
    attempts = failure["attempts"]
    assert {a["failure_class"] for a in attempts} == {"oom_cgroup"}, attempts
    limits = [a["limit_bytes"] for a in attempts]
    # Escalated: each retry got more memory, up to the workers' limit.
    assert len(limits) >= 2 and limits == sorted(set(limits)), limits
    assert limits[0] < WORKER_MEMORY and limits[-1] == WORKER_MEMORY, limits
    dask_pids = set(before.values())
    for attempt in attempts:
        ev = attempt["evidence"]
        assert ev["executor"] == "dask" and ev["isolation"] in ("cgroup-v1", "cgroup-v2")
        assert ev["signal_name"] == "SIGKILL"
        # The child ran in a cgroup of its own below its Dask worker's cgroup.
        match = re.search(r"/oomguard-(\d+)-\d+/w\d+$", ev["cgroup"])
        assert match is not None, ev["cgroup"]
        dask_pid = int(match[1])
        assert dask_pid in dask_pids and ev["pid"] not in dask_pids
        assert attempt["pid"] == ev["pid"]  # the attempt's row names the child that ran it
        assert Path(ev["cgroup"]).parent.parent == owns[dask_pid]
        assert ev["cgroup_after"]["oom_kill"] == ev["cgroup_before"]["oom_kill"] + 1
        assert ev["cgroup_after"]["limit_bytes"] == attempt["limit_bytes"]
        # The kernel's own line from that host names the child.
        assert ev["kernel"]["victim_pid"] == ev["pid"]
        assert any(f"Killed process {ev['pid']} " in line for line in ev["kernel_lines"])
    # No Dask worker died or was restarted: same processes, nothing lost or requeued.
    assert after == before
    assert counters.worker_deaths == 0 and counters.lost_before_gather == 0
    assert recycles == {}
    # The other tasks ran exactly once each: nothing recomputed.
    runs = Counter(int(p.name.split("-")[0]) for p in markers.iterdir())
    assert {x: n for x, n in runs.items() if x != BIG} == {x: 1 for x in range(24) if x != BIG}
    assert runs[BIG] == len(attempts)
    # Every cgroup made below the Dask workers was removed when they stopped.
    assert _run_dirs(owns) == []
    assert not any(os.path.exists(a["evidence"]["cgroup"]) for a in attempts)


def test_dask_local_enforces_worker_memory_as_the_local_pool_does(
    tmp_path: Path, cli: Any, require_cgroup: None
) -> None:
    # The reproduction: `--dask-local` ran the heavy tasks to completion in workers
    # without a limit. Now its workers get --worker-memory, and each attempt its own
    # cgroup: the same answer as the local pool.
    rows = [{"mib": 1024.0 if i == 2 else 1.0, "tag": i} for i in range(6)]
    params = tmp_path / "p.jsonl"
    params.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summaries = {}
    for name, extra in (("local", []), ("dask", ["--dask-local", "1"])):
        store = str(tmp_path / f"{name}.sqlite")
        res = cli(
            "run",
            "oomguard.examples:allocate",
            "--params",
            str(params),
            "--store",
            store,
            "--worker-memory",
            "256MiB",
            "--workers",
            "1",
            "--json",
            *extra,
        )
        assert res.returncode == 1, res.stderr  # one task failed for good
        summaries[name] = json.loads(res.stdout)
        info = json.loads(cli("status", "--store", store, "--json").stdout)
        (failure,) = info["failures"]
        assert failure["params"]["mib"] == 1024.0
        assert failure["failure_class"] == "needs_more_memory"
        last = failure["attempts"][-1]
        assert last["failure_class"] == "oom_cgroup" and last["limit_bytes"] == WORKER_MEMORY
        assert any(
            f"Killed process {last['pid']} " in line for line in last["evidence"]["kernel_lines"]
        )
    assert summaries["dask"]["counts"] == summaries["local"]["counts"]
    assert set(summaries["dask"]["failures_by_class"]) == {"oom_cgroup"}
