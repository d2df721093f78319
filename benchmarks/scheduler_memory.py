"""Scheduler memory per queued task: oomguard beside a Dask scheduler.

Question: how much does the scheduler process's resident memory grow when a burst of tasks
is queued? oomguard keeps queued tasks in its SQLite store, so the growth should not depend
on the number of tasks (target: at most 64 MiB for 1,000,000 queued tasks).

Command (about 2-3 minutes on 2 cores):

    .venv/bin/python benchmarks/scheduler_memory.py --n 1000000 --dask-n 100000

oomguard: a Runner with 1 worker running ``oomguard.examples:sleep`` (seconds=3600, so the
queue never drains) is started; then ``runner.sweep`` submits ``--n`` tasks from a generator
and the scheduler keeps running ``--run-seconds`` more. The scheduler runs in this process
(a thread), so this process's RSS is the scheduler's: sampled every 0.1 s by a thread
(psutil); growth = peak RSS - RSS just before submission.

Dask (the peer): a ``dask scheduler`` process and one ``dask worker --nthreads 1`` are
started as subprocesses on 127.0.0.1; ``client.map`` submits ``--dask-n`` long sleeps
(pure=False) and the scheduler runs ``--run-seconds`` more; the scheduler process's RSS is
sampled the same way. ``--dask-n 0`` skips it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from _common import MIB, RssSampler, emit, fmt_bytes, quiet_dask_logs, table

SLEEP = 3600.0


def run_oomguard(n: int, run_seconds: float) -> dict[str, Any]:
    import oomguard

    tmp = tempfile.mkdtemp(prefix="oomguard-bench-")
    store = os.path.join(tmp, "store.sqlite")
    try:
        r = oomguard.Runner(store=store, workers=1)
        r.start()
        time.sleep(1.0)  # let the worker pool settle
        with RssSampler() as s:
            before = s.rss()
            t0 = time.perf_counter()
            job = r.sweep("oomguard.examples:sleep",
                          ({"seconds": SLEEP} for _ in range(n)),
                          name="scheduler-memory")
            t_sub = time.perf_counter() - t0
            after_submit = s.rss()
            time.sleep(run_seconds)
            counts = job.status().counts
            assert r.scheduler is not None  # started above
            high_water = r.scheduler.admission.high_water
        r.close()
        store_bytes = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    growth = s.peak - before
    return {
        "n": n,
        "rss_before": before,
        "rss_after_submit": after_submit,
        "rss_peak": s.peak,
        "growth_bytes": growth,
        "bytes_per_task": growth / n,
        "submit_seconds": t_sub,
        "submit_tasks_per_s": n / t_sub,
        "queued": counts["ready"] + counts["queued"] + counts["pending"],
        "running": counts["running"],
        "admitted_high_water": high_water,
        "store_bytes": store_bytes,
        "samples": len(s.samples),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_dask(n: int, run_seconds: float) -> dict[str, Any]:
    from distributed import Client

    from oomguard.examples import sleep

    quiet_dask_logs()
    bindir = os.path.dirname(sys.executable)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    sched = subprocess.Popen([os.path.join(bindir, "dask"), "scheduler", "--host", "127.0.0.1",
                              "--port", str(port), "--no-dashboard"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        worker = subprocess.Popen([os.path.join(bindir, "dask"), "worker", address,
                                   "--nthreads", "1", "--nworkers", "1", "--no-dashboard"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with Client(address, timeout=60) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(1, timeout=60)
            time.sleep(1.0)
            with RssSampler(sched.pid) as s:
                before = s.rss()
                t0 = time.perf_counter()
                futures = client.map(sleep, [SLEEP] * n, pure=False)
                # client.map returns before the scheduler has them all: wait until it does.
                while True:
                    info = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
                    if info >= n:
                        break
                    time.sleep(0.1)
                t_sub = time.perf_counter() - t0
                time.sleep(run_seconds)
            client.cancel(futures)
            del futures
    finally:
        for proc in (worker, sched):
            if proc is not None:
                proc.terminate()
        for proc in (worker, sched):
            if proc is not None:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    growth = s.peak - before
    return {
        "n": n,
        "rss_before": before,
        "rss_peak": s.peak,
        "growth_bytes": growth,
        "bytes_per_task": growth / n,
        "submit_seconds": t_sub,
        "submit_tasks_per_s": n / t_sub,
        "samples": len(s.samples),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="tasks queued on oomguard")
    p.add_argument("--dask-n", type=int, default=100_000,
                   help="tasks queued on the Dask scheduler (0: skip Dask)")
    p.add_argument("--run-seconds", type=float, default=5.0,
                   help="keep sampling this long after submission")
    p.add_argument("--target-mib", type=float, default=64.0,
                   help="oomguard's target: most RSS growth allowed, whatever --n (default 64)")
    args = p.parse_args(argv)

    notes: list[str] = []
    print(f"... oomguard n={args.n}", file=sys.stderr, flush=True)
    results: dict[str, Any] = {"oomguard": run_oomguard(args.n, args.run_seconds)}
    if args.dask_n:
        print(f"... dask n={args.dask_n}", file=sys.stderr, flush=True)
        results["dask"] = run_dask(args.dask_n, args.run_seconds)
        notes.append("dask: RSS of the `dask scheduler` process only (client futures not "
                     "counted)")
    else:
        notes.append("dask skipped (--dask-n 0)")
    og = results["oomguard"]
    og["target_bytes"] = int(args.target_mib * MIB)
    og["meets_target"] = og["growth_bytes"] <= og["target_bytes"]
    notes.append("oomguard: the scheduler thread and the submitting code share this process; "
                 "its RSS covers both")

    rows = []
    for name, r in results.items():
        rows.append([name, r["n"], fmt_bytes(r["rss_before"]), fmt_bytes(r["rss_peak"]),
                     fmt_bytes(r["growth_bytes"]), r["bytes_per_task"], r["submit_seconds"],
                     r["submit_tasks_per_s"]])
    print(table(["scheduler", "tasks", "rss before", "rss peak", "growth", "bytes/task",
                 "submit s", "submitted/s"], rows))
    print(f"oomguard: growth {fmt_bytes(og['growth_bytes'])} for {og['n']:,} tasks; target "
          f"{fmt_bytes(og['target_bytes'])}: {'met' if og['meets_target'] else 'NOT met'}; "
          f"{og['queued']:,} queued, {og['running']} running after {args.run_seconds:g} s")
    emit("scheduler_memory", args, results, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
