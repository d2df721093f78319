"""A realistic sweep: oomguard beside a plain ProcessPoolExecutor doing the same work.

Question: on research code as it is written (each worker imports numpy, pandas and scipy
first; tasks of 0.5-2.5 s build agents with reference cycles), with an ample memory budget,
does oomguard finish without a single OOM kill, and how close is its wall time to a plain
``ProcessPoolExecutor`` (target: within 1.05x, same run)? Also the probe case: every task
shares one memory key oomguard has never seen.

Command (about 8 minutes on 2 cores; needs ``pip install numpy pandas scipy``, the
``bench`` extra):

    .venv/bin/python benchmarks/realistic_sweep.py

Cases: ``sweep`` (``--tasks`` tasks, ``n_agents`` in 6 values, keyed by it) and ``probe``
(``--probe-tasks`` tasks of one ``n_agents``, keyed by it: one new key). Durations are drawn
from 0.5-2.5 s (``--seed``) and turned into an amount of numpy work by a calibration run in
a subprocess first, so both runners do exactly the same work. Both start cold: the pool (or
oomguard's workers) is created inside the clock and each worker imports the libraries at its
first task (this process never imports them, so the pool's forked workers do not inherit
them: ``benchmarks/realistic_call.py``). oomguard: ``Runner(workers=N,
memory_key="n_agents")``, default budget (this machine's memory less the reserve), the task
given as ``benchmarks/realistic_tasks.py:simulate``; OOM kills = attempts with an OOM class.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, table

HERE = Path(__file__).resolve().parent
TASK = f"{HERE / 'realistic_tasks.py'}:simulate"
AGENTS = (2000, 5000, 10000, 20000, 30000, 40000)
STEPS = 10


def calibrate(n_agents: int) -> tuple[float, float]:
    """(seconds to build and finish a model, seconds per unit of work) for ``n_agents``:
    the least of three runs each, with enough work to measure (at least 0.3 s)."""
    from realistic_tasks import simulate

    def best(work: int) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            simulate(n_agents=n_agents, steps=STEPS, work=work)
            times.append(time.perf_counter() - t0)
        return min(times)

    base = best(1)
    work = 16
    while (spent := best(work + 1) - base) < 0.3:
        work *= 2
    return base, spent / (work * STEPS)


def calibrate_apart(agents: tuple[int, ...]) -> dict[int, tuple[float, float]]:
    """:func:`calibrate` each size in a subprocess: this process never imports the heavy
    libraries, so the pool's forked workers import them at their first task, as
    oomguard's workers do."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); "
        "from realistic_sweep import calibrate; "
        f"print(json.dumps({{a: calibrate(a) for a in {sorted(set(agents))!r}}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    return {int(a): (float(b), float(u)) for a, (b, u) in json.loads(out).items()}


def make_params(n: int, agents: tuple[int, ...], seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    costs = calibrate_apart(agents)
    params = []
    for i in range(n):
        a = agents[i % len(agents)] if len(agents) > 1 else agents[0]
        seconds = rng.uniform(0.5, 2.5)
        base, unit = costs[a]
        work = max(1, int((seconds - base) / (unit * STEPS)))
        params.append({"n_agents": a, "steps": STEPS, "work": work, "seed": i})
    rng.shuffle(params)
    return params


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_pool(params: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    from realistic_call import simulate

    cpu0 = children_cpu()
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(simulate, **p) for p in params]
        ok = sum(1 for f in futures if f.result() is not None)
    return {"wall_s": time.perf_counter() - t0, "succeeded": ok,
            "worker_cpu_s": children_cpu() - cpu0}


def run_oomguard(params: list[dict[str, Any]], workers: int, name: str) -> dict[str, Any]:
    import oomguard

    tmp = tempfile.mkdtemp(prefix="oomguard-bench-")
    try:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        with oomguard.Runner(store=os.path.join(tmp, "store.sqlite"), workers=workers,
                             memory_key="n_agents") as r:
            job = r.sweep(TASK, params, name=name)
            status = job.wait(progress=False)
            wall = time.perf_counter() - t0
            attempts = list(r.store.queries.all_attempts(job.id))
            knowledge = r.store.estimate_rows()
        sched_cpu = time.process_time() - cpu0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    kills = [a for a in attempts if (a.failure_class or "").startswith(("oom_", "memory"))]
    return {
        "wall_s": wall,
        "succeeded": status.counts.get("succeeded", 0),
        "attempts": len(attempts),
        "oom_kills": len(kills),
        "scheduler_cpu_s": sched_cpu,
        "largest_peak_mib": max((v.peak_bytes for v in knowledge.values()), default=0)
        / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--probe-tasks", type=int, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", default="sweep,probe")
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE))

    cases = {"sweep": make_params(args.tasks, AGENTS, args.seed),
             "probe": make_params(args.probe_tasks, (20000,), args.seed + 1)}
    results: dict[str, Any] = {}
    rows = []
    for case in args.cases.split(","):
        params = cases[case]
        print(f"... {case}: process pool", file=sys.stderr, flush=True)
        pool = run_pool(params, args.workers)
        print(f"... {case}: oomguard", file=sys.stderr, flush=True)
        og = run_oomguard(params, args.workers, case)
        ratio = og["wall_s"] / pool["wall_s"]
        results[case] = {"tasks": len(params), "process_pool": pool, "oomguard": og,
                         "wall_ratio": ratio}
        rows.append([case, len(params), pool["wall_s"], og["wall_s"], ratio, og["oom_kills"],
                     og["attempts"], og["largest_peak_mib"]])
    print(table(["case", "tasks", "pool wall s", "oomguard wall s", "ratio", "OOM kills",
                 "attempts", "largest peak MiB"], rows))
    emit("realistic_sweep", args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
