"""A simulation sweep as users run it: oomguard beside a plain ProcessPoolExecutor driver.

Question: on a numpy simulation sweep (an agent-based epidemic, ``benchmarks/sim_tasks.py``: agents
as Python objects and numpy arrays, tasks of about 0.5-4 s whose memory comes and goes,
peaks of about 100-650 MiB), with
replicates aggregated per parameter set and the results written to Parquet, what does
oomguard's protection cost next to the plain driver a user would write
(``ProcessPoolExecutor`` + ``as_completed`` + pyarrow), and where does it win?

Cases (``--cases``, all by default; about 8 minutes on 2 cores):

* ``fits``: an ample budget, ``--workers`` workers on both sides, 0 OOM kills expected.
  ``--pairs`` pairs run interleaved (the order alternates), each side in a subprocess of
  its own; per side: wall, user and system CPU seconds and minor page faults (the driver
  and every process it waited for: ``wait4``), and the peak RSS of its process tree
  (sampled every 50 ms). The results must be the same on both sides, value for value.
* ``outgrow``: the same plan with one more parameter set that needs more than a worker
  may have (``--worker-memory``). oomguard: that set's tasks fail ``needs_more_memory``,
  every other task finishes. The plain pool runs in a memory cgroup of ``--workers`` x
  ``--worker-memory`` (what the same memory would be for it): the kernel kills one of its
  workers, ``BrokenProcessPool`` fails every pending task.
* ``tenfold``: tasks whose peaks vary tenfold (many small, a few large) under a fixed
  ``--budget``. oomguard (``--workers`` workers, the budget, learning per ``n_agents``)
  beside the widest plain pool that does not crash (sized for the largest task: budget //
  largest peak workers) and beside a pool sized for the typical task (budget // typical
  peak workers, at most 8) in a cgroup of the budget, which crashes and loses work.
  oomguard is told the typical task's size (``--tenfold-hint``, a hint it corrects by
  learning), as a user who knows their sweep would.

Needs root and a writable memory cgroup for the cgroup-bound plain pools (``outgrow``,
``tenfold``); numpy and pyarrow (``pip install '.[bench]'``).

    .venv/bin/python benchmarks/sim_sweep.py [--pairs 3] [--cases fits,outgrow,tenfold]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from _common import MIB, emit, table

if TYPE_CHECKING:
    from oomguard.cgroups.cgroup import MemoryCgroup

HERE = Path(__file__).resolve().parent
#: n_agents of the ``fits`` plan: about 0.5 to 4 s and 100 to 650 MiB each
AGENTS = (25_000, 60_000, 100_000, 150_000, 220_000)


# -- the two drivers (each runs in a subprocess of its own) ---------------------------------


def drive_pool(plan: dict[str, Any], out: Path) -> dict[str, Any]:
    """What a user writes without oomguard: a process pool, results kept as they come,
    replicates aggregated per parameter set, Parquet at the end."""
    import concurrent.futures as cf

    import pyarrow as pa
    import pyarrow.parquet as pq
    from sim_tasks import epidemic, summarize

    params, reps = plan["params"], plan["replicates"]
    rows: list[dict[str, Any]] = []
    lost = 0
    with cf.ProcessPoolExecutor(max_workers=plan["pool_workers"]) as pool:
        futures = {
            pool.submit(epidemic, **p, replicate=r): (i, r)
            for i, p in enumerate(params)
            for r in range(reps)
        }
        for future in cf.as_completed(futures):
            i, r = futures[future]
            try:
                result = future.result()
            except Exception:  # BrokenProcessPool: the kernel killed a worker
                lost += 1
                continue
            rows.append({"set_id": i, **params[i], "replicate": r, **result})
    by_set: dict[int, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda x: (x["set_id"], x["replicate"])):
        by_set.setdefault(row["set_id"], []).append(row)
    aggregates = [
        {"set_id": i, **summarize(params[i], found)}
        for i, found in sorted(by_set.items())
        if len(found) == reps
    ]
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        pq.write_table(pa.Table.from_pylist(rows), out / "tasks.parquet")
    if aggregates:
        pq.write_table(pa.Table.from_pylist(aggregates), out / "aggregates.parquet")
    return {"succeeded": len(rows), "lost": lost, "aggregates": _keyed(aggregates)}


def drive_oomguard(plan: dict[str, Any], out: Path) -> dict[str, Any]:
    """The same sweep through oomguard: one job, replicates aggregated by it, Parquet parts
    written as results arrive."""
    import pyarrow.dataset as ds

    import oomguard

    params = [dict(p, set_id=i) for i, p in enumerate(plan["params"])]
    out.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"memory_key": "n_agents"}
    if plan.get("worker_memory"):
        options["worker_memory"] = plan["worker_memory"]
    if plan.get("task_memory"):
        options["task_memory"] = plan["task_memory"]  # a hint: what a user would declare
    with oomguard.Runner(
        store=str(out / "store.sqlite"),
        workers=plan["workers"],
        memory_budget=plan.get("budget"),
        **options,
    ) as runner:
        job = runner.sweep(
            "sim_tasks:epidemic_of_set",
            params,
            replicates=plan["replicates"],
            aggregate="sim_tasks:summarize",
            out=str(out / "parquet"),
            name="sim",
        )
        job.wait(progress=False)
        attempts = list(runner.store.queries.all_attempts(job.id))
    aggregates = ds.dataset(out / "parquet" / "aggregates").to_table().to_pylist()
    succeeded = ds.dataset(out / "parquet" / "tasks").count_rows()
    kills = [a for a in attempts if str(a.failure_class or "").startswith("oom")]
    tasks = len(params) * plan["replicates"]
    return {
        "succeeded": succeeded,
        "failed": tasks - succeeded,
        "lost": 0,
        "attempts": len(attempts),
        "oom_kills": len(kills),
        "aggregates": _keyed(aggregates),
    }


def _keyed(aggregates: list[dict[str, Any]]) -> dict[str, list[float]]:
    return {
        str(a["set_id"]): [a["attack_rate"], a["peak_infected"]]
        for a in aggregates
        if a.get("attack_rate") is not None
    }


# -- measuring a driver ---------------------------------------------------------------------


class TreeRss:
    """The peak RSS of a process and its descendants, sampled every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_side(side: str, plan: dict[str, Any], cgroup_limit: int | None) -> dict[str, Any]:
    """Run one driver in a subprocess; its outcome with wall, CPU, faults and peak RSS."""
    work = Path(tempfile.mkdtemp(prefix=f"sim-{side}-"))
    cgroup = _cgroup(cgroup_limit) if cgroup_limit else None
    try:
        (work / "plan.json").write_text(json.dumps(plan))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get(
            "PYTHONPATH", "")]).rstrip(os.pathsep))
        procs = str(cgroup.path / "cgroup.procs") if cgroup else None

        def enter_cgroup() -> None:
            if procs:
                with open(procs, "w") as fh:
                    fh.write(str(os.getpid()))

        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--driver", side, "--work", str(work)],
            env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=enter_cgroup,
        )
        sampler = TreeRss(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        peak = sampler.stop()
        output = proc.stdout.read().decode() if proc.stdout else ""
        errors = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.returncode = os.waitstatus_to_exitcode(status)
        outcome: dict[str, Any] = {"succeeded": 0, "lost": None, "aggregates": {}}
        for line in output.splitlines():
            if line.startswith("RESULT "):
                outcome = json.loads(line[len("RESULT "):])
        if proc.returncode != 0 and "RESULT " not in output:
            outcome["driver_died"] = proc.returncode
            if not cgroup_limit:  # nothing was meant to kill it: a broken benchmark
                sys.exit(f"sim_sweep: the {side} driver failed ({proc.returncode}):\n"
                         f"{errors[-3000:]}")
        return dict(
            outcome,
            wall_s=wall,
            user_s=usage.ru_utime,
            sys_s=usage.ru_stime,
            minor_faults=usage.ru_minflt,
            peak_rss_mib=peak / MIB,
        )
    finally:
        if cgroup is not None:
            cgroup.kill_all()
            for _ in range(100):
                try:
                    cgroup.remove()
                    break
                except Exception:
                    time.sleep(0.05)
        shutil.rmtree(work, ignore_errors=True)


def _cgroup(limit: int) -> MemoryCgroup:
    """A memory cgroup below this process's own, limited to ``limit`` bytes."""
    from oomguard.cgroups.cgroup import MemoryCgroup
    from oomguard.cgroups.detect import detect_isolation

    plan = detect_isolation()
    if plan.own_cgroup is None or plan.mode == "watchdog":
        sys.exit(f"sim_sweep: a memory cgroup is needed for the bounded plain pool: {plan.reason}")
    path = plan.own_cgroup / f"sim-sweep-pool-{os.getpid()}"
    path.mkdir()
    cgroup = MemoryCgroup(path, 2 if plan.mode == "cgroup-v2" else 1)
    cgroup.set_limit(limit)
    return cgroup


# -- plans and cases ------------------------------------------------------------------------


def fits_plan(args: argparse.Namespace) -> dict[str, Any]:
    params = [{"n_agents": a, "seed": s} for s in range(args.seeds) for a in AGENTS]
    return {"params": params, "replicates": args.replicates, "workers": args.workers,
            "pool_workers": args.workers}


def same_results(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["aggregates"]) and a["aggregates"] == b["aggregates"]


def case_fits(args: argparse.Namespace) -> tuple[dict[str, Any], list[list[Any]]]:
    plan = fits_plan(args)
    pairs = []
    for i in range(args.pairs):
        order = ("pool", "oomguard") if i % 2 == 0 else ("oomguard", "pool")
        pair = {}
        for side in order:
            print(f"... fits pair {i + 1}/{args.pairs}: {side}", file=sys.stderr, flush=True)
            pair[side] = run_side(side, plan, None)
        pairs.append(pair)
    metrics = ("wall_s", "user_s", "sys_s", "minor_faults", "peak_rss_mib")
    ratios = {m: [p["oomguard"][m] / p["pool"][m] for p in pairs] for m in metrics}
    rows = []
    for m in metrics:
        pool = statistics.median(p["pool"][m] for p in pairs)
        ours = statistics.median(p["oomguard"][m] for p in pairs)
        rows.append([m, pool, ours, statistics.median(ratios[m]), min(ratios[m]),
                     max(ratios[m])])
    result = {
        "tasks": len(plan["params"]) * plan["replicates"],
        "pairs": pairs,
        "ratio_median": {m: statistics.median(v) for m, v in ratios.items()},
        "ratio_range": {m: [min(v), max(v)] for m, v in ratios.items()},
        "same_results": all(same_results(p["pool"], p["oomguard"]) for p in pairs),
        "oom_kills": sum(p["oomguard"].get("oom_kills", 0) for p in pairs),
    }
    return result, rows


def case_outgrow(args: argparse.Namespace) -> dict[str, Any]:
    plan = fits_plan(args)
    # In the middle of the plan, as a sweep meets it: what comes after it is at stake.
    plan["params"].insert(len(plan["params"]) // 2, {"n_agents": args.outgrow_agents, "seed": 0})
    plan["worker_memory"] = args.worker_memory * MIB
    print("... outgrow: oomguard", file=sys.stderr, flush=True)
    ours = run_side("oomguard", plan, None)
    print("... outgrow: pool in a cgroup", file=sys.stderr, flush=True)
    pool = run_side("pool", plan, args.workers * args.worker_memory * MIB)
    total = len(plan["params"]) * plan["replicates"]
    return {"tasks": total, "outgrowing_tasks": plan["replicates"], "oomguard": ours,
            "pool": pool}


def case_tenfold(args: argparse.Namespace) -> dict[str, Any]:
    small, large = args.tenfold_agents
    params = [{"n_agents": small, "seed": s} for s in range(args.tenfold_small)]
    params += [{"n_agents": large, "seed": s} for s in range(args.tenfold_large)]
    random.Random(args.tenfold_seed).shuffle(params)  # as a sweep's sizes come
    budget = args.budget * MIB
    base = {"params": params, "replicates": 1, "workers": args.workers, "budget": budget,
            "task_memory": args.tenfold_hint * MIB}
    widest = max(1, args.budget // args.tenfold_large_peak)
    typical = max(args.workers, min(8, args.budget // args.tenfold_small_peak))
    out: dict[str, Any] = {"tasks": len(params), "budget_mib": args.budget,
                           "widest_safe_pool": widest, "typical_pool": typical}
    print("... tenfold: oomguard", file=sys.stderr, flush=True)
    out["oomguard"] = run_side("oomguard", dict(base, pool_workers=args.workers), None)
    print(f"... tenfold: pool of {widest} (sized for the largest)", file=sys.stderr, flush=True)
    out["pool_largest"] = run_side("pool", dict(base, pool_workers=widest), budget)
    print(f"... tenfold: pool of {typical} (sized for the typical)", file=sys.stderr,
          flush=True)
    out["pool_typical"] = run_side("pool", dict(base, pool_workers=typical), budget)
    out["wall_ratio_vs_largest"] = out["oomguard"]["wall_s"] / out["pool_largest"]["wall_s"]
    out["same_results"] = same_results(out["oomguard"], out["pool_largest"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="fits,outgrow,tenfold")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=int, default=2, help="seeds per n_agents (fits)")
    p.add_argument("--replicates", type=int, default=3)
    p.add_argument("--worker-memory", type=int, default=768, help="MiB (outgrow)")
    p.add_argument("--outgrow-agents", type=int, default=700_000,
                   help="about 1.9 GiB: more than --workers x --worker-memory")
    p.add_argument("--budget", type=int, default=1024, help="MiB (tenfold)")
    p.add_argument("--tenfold-agents", type=int, nargs=2, default=(12_000, 200_000))
    p.add_argument("--tenfold-large-peak", type=int, default=570,
                   help="MiB a large tenfold task peaks at (sizes the widest safe pool)")
    p.add_argument("--tenfold-small-peak", type=int, default=80,
                   help="MiB a small tenfold task peaks at (sizes the typical pool)")
    p.add_argument("--tenfold-hint", type=int, default=128,
                   help="MiB oomguard is told a task needs (task_memory: the typical task)")
    p.add_argument("--tenfold-seed", type=int, default=1)
    p.add_argument("--tenfold-small", type=int, default=36)
    p.add_argument("--tenfold-large", type=int, default=4)
    p.add_argument("--driver", choices=("pool", "oomguard"), help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.driver:
        plan = json.loads((args.work / "plan.json").read_text())
        drive = drive_pool if args.driver == "pool" else drive_oomguard
        print("RESULT " + json.dumps(drive(plan, args.work / "out")), flush=True)
        return 0

    results: dict[str, Any] = {}
    cases = args.cases.split(",")
    if "fits" in cases:
        results["fits"], rows = case_fits(args)
        print(f"fits: {results['fits']['tasks']} tasks, {args.pairs} interleaved pairs, "
              f"same results: {results['fits']['same_results']}, "
              f"OOM kills: {results['fits']['oom_kills']}")
        print(table(["metric", "pool (median)", "oomguard (median)", "ratio (median)",
                     "ratio min", "ratio max"], rows))
    if "outgrow" in cases:
        results["outgrow"] = o = case_outgrow(args)
        print(f"\noutgrow: {o['tasks']} tasks, {o['outgrowing_tasks']} of them outgrow a worker")
        print(table(["side", "succeeded", "failed", "lost", "wall s"], [
            ["oomguard", o["oomguard"]["succeeded"], o["oomguard"].get("failed"),
             o["oomguard"]["lost"], o["oomguard"]["wall_s"]],
            ["pool (cgroup)", o["pool"]["succeeded"], None, o["pool"]["lost"],
             o["pool"]["wall_s"]]]))
    if "tenfold" in cases:
        results["tenfold"] = t = case_tenfold(args)
        print(f"\ntenfold: {t['tasks']} tasks under {args.budget} MiB")
        print(table(["side", "workers", "succeeded", "lost", "OOM kills", "wall s",
                     "peak RSS MiB"], [
            ["oomguard", args.workers, t["oomguard"]["succeeded"], t["oomguard"]["lost"],
             t["oomguard"].get("oom_kills"), t["oomguard"]["wall_s"],
             t["oomguard"]["peak_rss_mib"]],
            ["pool, sized for the largest", t["widest_safe_pool"],
             t["pool_largest"]["succeeded"], t["pool_largest"]["lost"], None,
             t["pool_largest"]["wall_s"], t["pool_largest"]["peak_rss_mib"]],
            ["pool, sized for the typical", t["typical_pool"], t["pool_typical"]["succeeded"],
             t["pool_typical"]["lost"], None, t["pool_typical"]["wall_s"],
             t["pool_typical"]["peak_rss_mib"]]]))
        print(f"oomguard / widest safe pool: {t['wall_ratio_vs_largest']:.2f}x wall, "
              f"same results: {t['same_results']}")
    emit("sim_sweep", args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
