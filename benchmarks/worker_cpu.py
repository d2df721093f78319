"""A worker's own CPU per no-op attempt, and the pool's, batch by batch.

Question: what does one oomguard worker spend on each attempt's bookkeeping (the leftover
sweep, the peak and OOM kill counter reads, loading the function, its answer) around a
call that does nothing, and what does the pool spend in the scheduler's process to send
it and read the answer? One real worker (in a memory cgroup where this machine gives one,
as ``oomguard doctor`` would say), fed by a ``WorkerPool`` batches of ``--batch`` calls
of ``oomguard.examples:noop``; the worker's CPU (user + system) from ``/proc/PID/stat``
before and after ``--batches`` batches, the pool's from this process's CPU clock. To
compare two versions run it with each one's ``src`` first on ``PYTHONPATH``, in turn.

    .venv/bin/python benchmarks/worker_cpu.py --batch 200 16 1
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from _common import emit, table

from oomguard.cgroups.detect import detect_isolation
from oomguard.worker.calls import JsonCall
from oomguard.worker.messages import Idle
from oomguard.worker.pool import PoolConfig, Worker, WorkerPool

FN = "oomguard.examples:noop"


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(pool: WorkerPool, worker: Worker, batch: int, batches: int, first: int) -> int:
    attempt = first
    for _ in range(batches):
        items = [JsonCall(attempt + k, FN, '{"x": 1}') for k in range(batch)]
        attempt += batch
        pool.send(worker, list(items))
        while True:
            messages, died = pool.poll(5.0)
            if died:
                raise RuntimeError(f"worker {worker.name} died")
            if any(isinstance(m, Idle) for _, m in messages):
                break
    return attempt


def measure(batch: int, attempts: int) -> dict[str, Any]:
    pool = WorkerPool(
        PoolConfig(workers=1, isolation=detect_isolation(), worker_memory=512 * 1024 * 1024)
    )
    pool.start()
    try:
        worker = next(iter(pool.workers.values()))
        batches = max(1, attempts // batch)
        first = _run(pool, worker, batch, max(1, 2000 // batch), 1)  # warm
        cpu0, own0 = _cpu(worker.pid), time.process_time()
        _run(pool, worker, batch, batches, first)
        n = batch * batches
        return {
            "attempts": n,
            "worker_cpu_us_per_attempt": (_cpu(worker.pid) - cpu0) / n * 1e6,
            "pool_cpu_us_per_attempt": (time.process_time() - own0) / n * 1e6,
            "mode": pool.mode,
        }
    finally:
        pool.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[200, 16, 1])
    p.add_argument("--attempts", type=int, default=24000,
                   help="attempts per batch size (default 24000; at most 8000 batches)")
    args = p.parse_args()
    results = {}
    rows = []
    for batch in args.batch:
        r = measure(batch, min(args.attempts, 8000 * batch))
        results[str(batch)] = r
        rows.append([batch, r["attempts"], r["worker_cpu_us_per_attempt"],
                     r["pool_cpu_us_per_attempt"], r["mode"]])
    print(table(["batch", "attempts", "worker us", "pool us", "isolation"], rows))
    emit("worker_cpu", args, results, [f"load average {os.getloadavg()}"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
