"""A sweep of small and large tasks in a fixed memory budget: oomguard beside Dask.

Question: with 2 GiB to share between 4 workers, and a sweep where most tasks need ~100 MiB
but some need ~1.2 GiB, does every task that fits finish, and how many OOM kills and
recomputations does it cost? (target for oomguard: 100% of the tasks that fit complete,
at most two OOM kills per memory key: one at its first estimate, one at the cap for a key
that cannot fit)

Command (about 1-3 minutes on 2 cores):

    .venv/bin/python benchmarks/heterogeneous_sweep.py
    .venv/bin/python benchmarks/heterogeneous_sweep.py --mixed   # the admission issue's sweep

Tasks: ``--small`` x ``allocate(mib=100, hold=0.2)`` and ``--large`` x
``allocate(mib=1200, hold=0.5)``, interleaved in a fixed shuffled order (``--seed``).

oomguard: ``Runner(workers=4, memory_budget=2GiB, memory_key="mib")``, isolation auto (a
memory cgroup per worker where the machine allows it, else the RSS watchdog); it learns each
memory key's peak, and an OOM-killed task is retried with a larger estimate.
OOM kills = attempts with an ``oom_*`` class; recomputed = attempts beyond the first.

Dask: ``LocalCluster(n_workers=4, threads_per_worker=1, memory_limit="512MiB")`` (the same
2 GiB in total), ``client.map`` then each future's result, catching ``KilledWorker`` per task.
OOM kills = worker processes replaced (the nanny kills a worker past 95% of its limit);
recomputed = transitions to ``processing`` beyond the first per task (a scheduler plugin).
A task fits on Dask only if it fits one worker's limit: the large tasks never do, which is
the point of comparison (a fixed per-worker limit vs. a shared budget).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from typing import Any

from _common import MIB, emit, fmt_bytes, quiet_dask_logs, table

from oomguard.units import parse_size

FN = "oomguard.examples:allocate"


def make_params(small: int, large: int, seed: int, small_mib: float, large_mib: float,
                huge: int = 0, huge_mib: float = 3072) -> list[dict[str, Any]]:
    params = ([{"mib": small_mib, "hold": 0.2}] * small
              + [{"mib": large_mib, "hold": 0.5}] * large
              + [{"mib": huge_mib, "hold": 0.5}] * huge)
    params = [dict(p) for p in params]
    random.Random(seed).shuffle(params)
    return params


def run_oomguard(params: list[dict[str, Any]], workers: int, budget: str, timeout: float,
                 task_memory: str | None = None) -> dict[str, Any]:
    import oomguard

    tmp = tempfile.mkdtemp(prefix="oomguard-bench-")
    try:
        t0 = time.perf_counter()
        with oomguard.Runner(store=os.path.join(tmp, "store.sqlite"), workers=workers,
                             memory_budget=budget, memory_key="mib", isolation="auto",
                             task_memory=task_memory) as r:
            job = r.sweep(FN, params, name="heterogeneous")
            timed_out = False
            try:
                job.wait(timeout=timeout, progress=False)
            except TimeoutError:
                timed_out = True
            wall = time.perf_counter() - t0
            status = job.status()
            attempts = list(r.store.queries.all_attempts(job.id))
            sched = r.scheduler
            assert sched is not None  # the sweep started it
            high_water = sched.admission.high_water
            budget_bytes = sched.admission.budget
            isolation = sched.isolation.mode if sched.isolation is not None else None
            failures = job.failures()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    kills_by_key: dict[str, int] = {}
    classes: dict[str, int] = {}
    for a in attempts:
        fc = a.failure_class
        if fc:
            classes[fc] = classes.get(fc, 0) + 1
        if fc and fc.startswith(("oom_", "memory")):
            key = str(a.memory_key).split("|")[-1]
            kills_by_key[key] = kills_by_key.get(key, 0) + 1
    counts = status.counts
    return {
        "tasks": len(params),
        "succeeded": counts["succeeded"],
        "failed": counts["failed"],
        "completion": counts["succeeded"] / len(params),
        "attempts": len(attempts),
        "oom_kills": sum(kills_by_key.values()),
        "oom_kills_by_key": kills_by_key,
        "failure_classes": classes,
        "recomputed": len(attempts) - len(params),
        "wall_s": wall,
        "timed_out": timed_out,
        "admitted_high_water": high_water,
        "budget_bytes": budget_bytes,
        "isolation": str(isolation) if isolation is not None else None,
        "failed_tasks": [{"params": f.params, "class": f.failure_class, "error": f.error}
                         for f in failures],
    }


def run_dask(params: list[dict[str, Any]], workers: int, memory_limit: str,
             timeout: float) -> dict[str, Any]:
    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin

    from oomguard.examples import allocate

    quiet_dask_logs()

    class Transitions(SchedulerPlugin):
        def __init__(self) -> None:
            self.processing: dict[str, int] = {}

        def transition(self, key: Any, start: str, finish: str, *a: Any, **kw: Any) -> None:
            if finish == "processing":
                self.processing[str(key)] = self.processing.get(str(key), 0) + 1

    seen: set[str] = set()
    stop = threading.Event()

    t0 = time.perf_counter()
    with LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
            dashboard_address=None) as cluster, \
            Client(cluster) as client:  # type: ignore[no-untyped-call]
        plugin = Transitions()
        cluster.scheduler.add_plugin(plugin, name="bench-transitions")

        def watch() -> None:
            while not stop.is_set():
                with contextlib.suppress(RuntimeError):  # dict changed while copying
                    seen.update(list(cluster.scheduler.workers))
                stop.wait(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        client.wait_for_workers(workers)
        watcher.start()
        t0 = time.perf_counter()
        futures = [client.submit(allocate, pure=False, **p) for p in params]
        ok = killed = other = 0
        errors: dict[str, int] = {}
        ok_by_mib: dict[str, int] = {}
        lost_by_mib: dict[str, int] = {}
        for p, f in zip(params, futures, strict=True):
            try:
                f.result(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
                ok += 1
                ok_by_mib[str(p["mib"])] = ok_by_mib.get(str(p["mib"]), 0) + 1
            except Exception as err:  # KilledWorker, TimeoutError, ...
                name = type(err).__name__
                errors[name] = errors.get(name, 0) + 1
                lost_by_mib[str(p["mib"])] = lost_by_mib.get(str(p["mib"]), 0) + 1
                if name == "KilledWorker":
                    killed += 1
                else:
                    other += 1
        wall = time.perf_counter() - t0
        time.sleep(0.2)
        stop.set()
        watcher.join()
        seen.update(list(cluster.scheduler.workers))
        processing = dict(plugin.processing)
    recomputed = sum(max(0, n - 1) for n in processing.values())
    return {
        "tasks": len(params),
        "succeeded": ok,
        "succeeded_by_mib": ok_by_mib,
        "failed_by_mib": lost_by_mib,
        "failed": len(params) - ok,
        "completion": ok / len(params),
        "killed_worker_errors": killed,
        "errors": errors,
        "worker_restarts": max(0, len(seen) - workers),
        "workers_seen": len(seen),
        "recomputed": recomputed,
        "wall_s": wall,
        "memory_limit_per_worker": parse_size(memory_limit),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=50)
    p.add_argument("--large", type=int, default=10)
    p.add_argument("--small-mib", type=float, default=100)
    p.add_argument("--large-mib", type=float, default=1200)
    p.add_argument("--huge", type=int, default=0, help="tasks larger than the budget")
    p.add_argument("--huge-mib", type=float, default=3072)
    p.add_argument("--task-memory", default=None,
                   help="oomguard: a declared estimate for every task (a hint)")
    p.add_argument("--mixed", action="store_true",
                   help="the admission issue's sweep: 30 x 40 MiB, 6 x 700 MiB, 2 x 3 GiB, "
                        "--task-memory 64MiB, a 1.5 GiB budget (Dask: 4 x 384 MiB)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--budget", default="2GiB", help="oomguard's memory budget")
    p.add_argument("--dask-memory-limit", default="512MiB", help="Dask's per-worker limit")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="give up waiting for oomguard's job after this many seconds")
    p.add_argument("--dask-timeout", type=float, default=180.0,
                   help="give up waiting for Dask after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-dask", action="store_true")
    args = p.parse_args(argv)
    if args.mixed:
        args.small, args.small_mib, args.large, args.large_mib = 30, 40, 6, 700
        args.huge, args.huge_mib, args.task_memory = 2, 3072, "64MiB"
        args.budget, args.dask_memory_limit = "1.5GiB", "384MiB"

    faulthandler.dump_traceback_later(args.timeout + args.dask_timeout + 120, exit=True)
    params = make_params(args.small, args.large, args.seed, args.small_mib, args.large_mib,
                         args.huge, args.huge_mib)
    notes: list[str] = []
    print("... oomguard", file=sys.stderr, flush=True)
    results: dict[str, Any] = {"oomguard": run_oomguard(params, args.workers, args.budget,
                                                     args.timeout, args.task_memory)}
    if not args.skip_dask:
        print("... dask", file=sys.stderr, flush=True)
        results["dask"] = run_dask(params, args.workers, args.dask_memory_limit,
                                   args.dask_timeout)
    og = results["oomguard"]
    budget = parse_size(args.budget)
    fits = sum(1 for q in params if q["mib"] * MIB <= budget)
    og["tasks_that_fit"] = fits
    og["completion_of_fitting"] = og["succeeded"] / fits if fits else None
    # The target: everything that fits completes, at most 2 OOM kills per memory key.
    og["meets_target"] = (og["succeeded"] >= fits
                          and all(v <= 2 for v in og["oom_kills_by_key"].values()))
    if "dask" in results:
        dk = results["dask"]
        lim = parse_size(args.dask_memory_limit)
        dk["tasks_that_fit"] = sum(1 for q in params if q["mib"] * MIB <= lim * 0.95)
        notes.append("dask: tasks_that_fit counts tasks under 95% of one worker's limit (the "
                     "nanny's terminate threshold); tasks over that never fit a "
                     f"{args.dask_memory_limit} worker")

    rows = [["oomguard", f"{og['succeeded']}/{og['tasks']}", og["failed"], og["oom_kills"],
             str(og["oom_kills_by_key"]), og["recomputed"], og["wall_s"]]]
    if "dask" in results:
        dk = results["dask"]
        rows.append(["dask", f"{dk['succeeded']}/{dk['tasks']}", dk["failed"],
                     dk["worker_restarts"], f"failed by mib: {dk['failed_by_mib']}",
                     dk["recomputed"], dk["wall_s"]])
    print(table(["runner", "succeeded", "failed", "OOM kills / restarts", "by key",
                 "recomputed", "wall s"], rows))
    print(f"oomguard: {og['succeeded']}/{fits} tasks that fit the {args.budget} budget "
          f"completed; admitted high water {fmt_bytes(og['admitted_high_water'])} of "
          f"{fmt_bytes(og['budget_bytes'])}; isolation {og['isolation']}; target "
          f"{'met' if og['meets_target'] else 'NOT met'}")
    emit("heterogeneous_sweep", args, results, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
