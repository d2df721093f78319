"""Chaos: fixed seeds of the chaos benchmark, each a job of misbehaving tasks run through
the real CLI, each checked for hangs, lost or duplicated rows, unclassified failures,
classes other than the task's kind must give, and cgroups or processes left behind.

The jobs, the run and the checks are the benchmark's own (``benchmarks/chaos_plan.py``,
``benchmarks/chaos_check.py``); ``benchmarks/chaos.py --seeds N`` runs many more. A run
that does not finish within :data:`BOUND_S` counts as a hang: its stacks are dumped and it
is killed, so a stuck scheduler fails the test instead of stalling it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import chaos
from chaos_plan import make_plan

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

#: seconds one run may take: these jobs take 1-7 s here
BOUND_S = 20.0

#: seed -> (Dask?, what its plan must hold: options and kinds)
SEEDS = {
    # cgroup, --out, --replicates 2 --aggregate: kernel OOM kills, errors, unpicklable
    # results, 2 MiB results in blob files read back by aggregations and the sink.
    514: (False, {"cgroup", "out", "aggregate", "oom", "error", "unpicklable", "large"}),
    # cgroup, --out: lone surrogates in a result and in an error message, MemoryError.
    58: (
        False,
        {
            "cgroup",
            "out",
            "surrogate_result",
            "surrogate_error",
            "memory_error",
            "unpicklable",
            "large",
            "oom",
        },
    ),
    # watchdog, no --out: watchdog OOM kills, a timeout, SIGABRT, sys.exit.
    1917: (False, {"watchdog", "no-out", "oom", "timeout", "abort", "exit", "large"}),
    # cgroup, --out: crashes by signal and os._exit (retried with backoff), a timeout and
    # an OOM kill of the task's child: the job's last outcome is a failure.
    44: (False, {"cgroup", "out", "segv", "abort", "os_exit", "timeout", "oom_child", "error"}),
    # cgroup, --out, --aggregate: blob files deleted under the running scheduler.
    30: (False, {"cgroup", "out", "aggregate", "large", "error", "lose_blobs"}),
    # Dask (--dask-local 2), --out, --aggregate: errors, unpicklable and large results.
    511: (True, {"dask", "out", "aggregate", "error", "unpicklable", "large"}),
    # Dask: a MemoryError recycles its worker while other tasks are queued on it (they
    # were killed with it before the worker was cordoned first).
    19: (True, {"dask", "no-out", "memory_error", "succeed"}),
    # cgroup: short tasks batched to one worker, one of them has its child OOM-killed (it
    # was blamed on the last task of the batch).
    170: (False, {"cgroup", "no-out", "oom_child", "succeed"}),
}


def _covers(seed: int, dask: bool) -> set[str]:
    plan = make_plan(seed, dask=dask)
    traits = set(plan.kinds)
    traits.add(plan.isolation or "dask")
    traits.add("out" if plan.out else "no-out")
    if plan.aggregate:
        traits.add("aggregate")
    return traits


@pytest.mark.parametrize("seed", list(SEEDS))
def test_chaos_seed(seed: int, tmp_path: Path, require_cgroup: None) -> None:
    dask, wanted = SEEDS[seed]
    if dask:
        pytest.importorskip("distributed", reason="the Dask seed needs dask[distributed]")
    # The generator decides the jobs: a seed that no longer makes the job it stands for
    # here must be chosen again, not silently test something else.
    missing = wanted - _covers(seed, dask)
    assert not missing, f"seed {seed} no longer makes a job with {sorted(missing)}"
    outcome = chaos.run_seed(seed, timeout=BOUND_S, dask=dask, base=str(tmp_path))
    problems = outcome.findings.problems()
    detail = [
        f"seed {seed} ({outcome.plan.describe()}), exit {outcome.rc}, {outcome.seconds:.1f} s:",
        *problems,
    ]
    if outcome.findings.hang:
        detail.append(f"threads: {'; '.join(outcome.findings.stuck_at)}")
        detail.append(f"store at the hang: {outcome.store_at_hang}")
    elif problems:
        detail.append("stderr (end): " + outcome.stderr_tail[-600:])
    if problems:
        pytest.fail("\n".join(detail))
    assert outcome.findings.states, "the run stored no task"
