"""Throughput of tiny tasks: oomguard beside ProcessPoolExecutor, loky, Dask and Ray.

Question: how many no-op tasks per second does oomguard run end to end (submitted into a
durable SQLite store, run on 2 worker processes, every result committed), compared with the
usual process pools doing one submit per task and then gathering every result?

Command (about 2-3 minutes on 2 cores):

    .venv/bin/python benchmarks/throughput.py --n 10000 100000

Each peer runs the same function (``oomguard.examples:noop``, returns its argument) with the
same number of worker processes. Pools are started and warmed (every worker ran a task)
before the clock starts; the clock stops when every result is back (peers) or when the job
is finished in the store (oomguard, ``job.wait()``). Dask is capped at ``--dask-max`` tasks
(default 10,000) since its per-task overhead makes larger runs slow; Ray runs only when it is
importable. oomguard's store lives in a fresh temporary directory for each run.

``--store-url postgresql://...`` adds the peer ``oomguard-pg``: the same run with its store
in PostgreSQL, in a fresh schema of that database for each run (the user needs CREATE on
the database), run right after the SQLite one for each N.

For oomguard it also prints where the scheduler's process spent its CPU, in us per task,
from each thread's own CPU clock (``time.pthread_getcpuclockid``): ``loop us`` is the
scheduler loop's thread alone (the aim: at most 30), ``submit us`` the submitting thread
while it submits, ``wait us`` the same thread while it waits, ``other us`` every other
thread (the sampler, the part writer, the kernel-log reader). The JSON keeps
``scheduler_cpu_us_per_task`` (the whole process) and adds ``loop_thread_cpu_us_per_task``,
``submit_cpu_us_per_task``, ``main_thread_cpu_us_per_task`` (submitting and waiting) and
``other_threads_cpu_us_per_task``.

For every peer, ``workers us`` (JSON ``workers_cpu_us_per_task``) is the CPU (user +
system) its worker processes used from the clock's start to the last result, per task,
read from ``/proc/PID/stat`` of this process's children (clock ticks: 10 ms each, a few
hundredths of a us per task at 50,000 tasks; a worker started after the clock started
counts whole, one that exited before it stopped is missed).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any

from _common import emit, quiet_dask_logs, table

from oomguard.examples import noop

FN = "oomguard.examples:noop"


def _thread_cpu(thread: threading.Thread | None) -> float:
    """CPU seconds ``thread`` has used (its own clock: user + system, to the nanosecond)."""
    if thread is None or thread.ident is None or not thread.is_alive():
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _children_cpu() -> dict[int, float]:
    """CPU seconds (user + system) each child process of this one has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as fh:
                pids = fh.read().split()
            for pid in pids:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                found[int(pid)] = (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue  # a thread or a child gone meanwhile
    return found


def _workers_cpu_us(before: dict[int, float], n: int) -> float:
    """The children's CPU since ``before`` (a :func:`_children_cpu`), us per task."""
    after = _children_cpu()
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items()) / n * 1e6


def run_oomguard(n: int, workers: int, store: str | None = None) -> dict[str, Any]:
    import oomguard

    tmp = tempfile.mkdtemp(prefix="oomguard-bench-")
    try:
        with oomguard.Runner(store=store or os.path.join(tmp, "store.sqlite"),
                             workers=workers) as r:
            r.start()
            loop = next(t for t in threading.enumerate() if t.name == "oomguard-scheduler")
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            loop0, main0 = _thread_cpu(loop), time.thread_time()
            children0 = _children_cpu()
            job = r.sweep(FN, ({"x": i} for i in range(n)), name=f"throughput-{n}")
            t_sub = time.perf_counter() - t0
            submit = time.thread_time() - main0
            status = job.wait(progress=False)
            elapsed = time.perf_counter() - t0
            workers_cpu = _workers_cpu_us(children0, n)
            # Read while the loop thread lives: the loop alone, the submitting (this)
            # thread, and the rest of the process (the sampler, the part writer, ...).
            loop_cpu = _thread_cpu(loop) - loop0
            main_cpu = time.thread_time() - main0
            cpu = time.process_time() - cpu0
        ok = status["counts"]["succeeded"]
        return {
            "seconds": elapsed,
            "submit_seconds": t_sub,
            "succeeded": ok,
            # the whole process: the loop, the submission and the other threads
            "scheduler_cpu_us_per_task": cpu / n * 1e6,
            "loop_thread_cpu_us_per_task": loop_cpu / n * 1e6,
            "submit_cpu_us_per_task": submit / n * 1e6,
            "main_thread_cpu_us_per_task": main_cpu / n * 1e6,
            "other_threads_cpu_us_per_task": (cpu - loop_cpu - main_cpu) / n * 1e6,
            "workers_cpu_us_per_task": workers_cpu,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _gather_pool(pool: Any, n: int) -> tuple[float, float, int, float]:
    # Warm: make sure every worker process exists and imported the function.
    for f in [pool.submit(noop, -1) for _ in range(8)]:
        f.result()
    children0 = _children_cpu()
    t0 = time.perf_counter()
    futures = [pool.submit(noop, i) for i in range(n)]
    t_sub = time.perf_counter() - t0
    ok = 0
    for i, f in enumerate(futures):
        ok += f.result() == i
    elapsed = time.perf_counter() - t0
    return elapsed, t_sub, ok, _workers_cpu_us(children0, n)


def run_processpool(n: int, workers: int) -> dict[str, Any]:
    with cf.ProcessPoolExecutor(max_workers=workers) as pool:
        elapsed, t_sub, ok, workers_cpu = _gather_pool(pool, n)
    return {"seconds": elapsed, "submit_seconds": t_sub, "succeeded": ok,
            "workers_cpu_us_per_task": workers_cpu}


def run_loky(n: int, workers: int) -> dict[str, Any]:
    from loky import get_reusable_executor

    pool = get_reusable_executor(max_workers=workers)
    try:
        elapsed, t_sub, ok, workers_cpu = _gather_pool(pool, n)
    finally:
        pool.shutdown(wait=True)
    return {"seconds": elapsed, "submit_seconds": t_sub, "succeeded": ok,
            "workers_cpu_us_per_task": workers_cpu}


def run_dask(n: int, workers: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    quiet_dask_logs()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.gather([client.submit(noop, -1 - k, pure=False) for k in range(8)])
        t0 = time.perf_counter()
        futures = [client.submit(noop, i, pure=False) for i in range(n)]
        t_sub = time.perf_counter() - t0
        results = client.gather(futures)
        elapsed = time.perf_counter() - t0
    ok = sum(r == i for i, r in enumerate(results))
    return {"seconds": elapsed, "submit_seconds": t_sub, "succeeded": ok}


def run_ray(n: int, workers: int) -> dict[str, Any]:
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(noop)
        ray.get([remote.remote(-1) for _ in range(8)])
        t0 = time.perf_counter()
        refs = [remote.remote(i) for i in range(n)]
        t_sub = time.perf_counter() - t0
        results = ray.get(refs)
        elapsed = time.perf_counter() - t0
    finally:
        ray.shutdown()
    ok = sum(r == i for i, r in enumerate(results))
    return {"seconds": elapsed, "submit_seconds": t_sub, "succeeded": ok}


#: the database of the oomguard-pg peer (--store-url)
STORE_URL: list[str] = []


def run_oomguard_pg(n: int, workers: int) -> dict[str, Any]:
    """oomguard with its store in a fresh schema of the --store-url database."""
    import psycopg

    schema = f"bench_{os.getpid()}_{time.time_ns()}"
    with psycopg.connect(STORE_URL[0], autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in STORE_URL[0] else "?"
    url = f"{STORE_URL[0]}{sep}options=-csearch_path%3D{schema}"
    try:
        return run_oomguard(n, workers, store=url)
    finally:
        with psycopg.connect(STORE_URL[0], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


PEERS = {
    "oomguard": run_oomguard,
    "oomguard-pg": run_oomguard_pg,
    "processpool": run_processpool,
    "loky": run_loky,
    "dask": run_dask,
    "ray": run_ray,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[10000, 100000],
                   help="task counts to run (default: 10000 100000)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dask-max", type=int, default=10000,
                   help="run Dask only for N up to this (default 10000; it is slow)")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    p.add_argument("--store-url", default=None,
                   help="a PostgreSQL database for the oomguard-pg peer (skipped without)")
    args = p.parse_args(argv)

    notes: list[str] = []
    peers = list(args.peers)
    if args.store_url:
        from oomguard.store.location import shown

        STORE_URL.append(args.store_url)
        args.store_url = shown(args.store_url)  # the printed arguments show no password
    elif "oomguard-pg" in peers:
        peers.remove("oomguard-pg")
    if "ray" in peers:
        try:
            import ray  # noqa: F401
        except ImportError:
            peers.remove("ray")
            notes.append("ray is not installed: skipped (pip install ray to include it)")
    notes.append(f"ProcessPoolExecutor start method: "
                 f"{__import__('multiprocessing').get_start_method()}")

    results: dict[str, dict[str, Any]] = {}
    rows = []
    for n in args.n:
        per: dict[str, Any] = {}
        for peer in peers:
            if peer == "dask" and n > args.dask_max:
                per[peer] = {"skipped": f"n > --dask-max {args.dask_max}"}
                continue
            print(f"... {peer} n={n}", file=sys.stderr, flush=True)
            r = PEERS[peer](n, args.workers)
            r["tasks_per_s"] = n / r["seconds"]
            per[peer] = r
        og = per.get("oomguard", {}).get("tasks_per_s")
        for peer, r in per.items():
            if "skipped" in r:
                rows.append([n, peer, None, None, None, None, None, None, None, None,
                             None, r["skipped"]])
                continue
            ratio = og / r["tasks_per_s"] if og and peer != "oomguard" else None
            r["oomguard_ratio"] = ratio
            if "loop_thread_cpu_us_per_task" in r:
                note = f"process CPU {r['scheduler_cpu_us_per_task']:.0f} us/task"
                cpu = [r["loop_thread_cpu_us_per_task"], r["submit_cpu_us_per_task"],
                       r["main_thread_cpu_us_per_task"] - r["submit_cpu_us_per_task"],
                       r["other_threads_cpu_us_per_task"]]
            else:
                note, cpu = "", [None] * 4
            rows.append([n, peer, r["seconds"], r["tasks_per_s"], r["succeeded"],
                         ratio, *cpu, r.get("workers_cpu_us_per_task"), note])
        results[str(n)] = per

    # CPU columns, us per task: the scheduler loop's thread, the submitting thread while
    # it submits and then while it waits, every other thread of the process; the workers.
    print(table(["n", "runner", "seconds", "tasks/s", "succeeded", "oomguard/peer",
                 "loop us", "submit us", "wait us", "other us", "workers us", "note"], rows))
    emit("throughput", args, results, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
