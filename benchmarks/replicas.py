"""No-op tasks through ``oomguard serve``: two replicas on one PostgreSQL, one replica on
PostgreSQL, and the SQLite server, side by side in one run.

Question: how many tasks a second go through the server end to end (submitted over HTTP in
batches, claimed, run on the servers' workers, every result committed), and how long a
submission waits (p50/p99 of ``POST /v1/jobs``), on each store?

Command (a few minutes on 2 cores; needs PostgreSQL's binaries and psycopg, as the tests):

    .venv/bin/python benchmarks/replicas.py --tasks 20000 --batch 500 --rounds 2

Each round runs every configuration once, in a rotating order (this machine is shared:
the pairs are interleaved). Every configuration gets a fresh store: an SQLite file, or a
fresh database of one throwaway cluster (``initdb`` in a temporary directory, a unix
socket, fsync on) started for the run and removed at its end. Every server has
``--workers`` worker processes (a replica brings its own, as a pod would). Submissions go
to the servers in turn (a load balancer's round robin) from 8 threads; the clock stops when
every job is finished. Checked, not only timed: every task succeeded once (the stored
results are counted, per job, in the database).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from _common import emit, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.postgres import Cluster, start_cluster, stop_cluster
from oomguard.cli.bench import free_port

CONFIGS = ("sqlite", "pg-1", "pg-2")


@contextlib.contextmanager
def servers(store: str, count: int, workers: int, replica: bool, tmp: Path) -> Iterator[list[str]]:
    """``count`` started ``oomguard serve`` processes on ``store``; their URLs."""
    procs: list[tuple[subprocess.Popen[bytes], Any]] = []
    urls: list[str] = []
    try:
        for i in range(count):
            port = free_port()
            log = open(tmp / f"serve-{i}.log", "wb")  # noqa: SIM115 - closed below
            cmd = [sys.executable, "-m", "oomguard.cli.main", "serve", "--store", store,
                   "--listen", f"127.0.0.1:{port}", "--workers", str(workers),
                   "--max-pending-tasks", "10000000"]
            if replica:
                cmd.append("--replica")
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        for (proc, _), url in zip(procs, urls, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"serve exited {proc.returncode}: see {tmp}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("serve did not start in 60 s")
                time.sleep(0.1)
        yield urls
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, log in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def load(urls: list[str], tasks: int, batch: int) -> dict[str, Any]:
    """Submit ``tasks`` no-op tasks in batches, round robin over ``urls``; wait for all."""
    latencies: list[float] = []
    jobs: list[tuple[str, str, int]] = []
    lock = threading.Lock()
    local = threading.local()
    counter = iter(range(10**9))

    def one(n: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=120)
        with lock:
            url = urls[next(counter) % len(urls)]
        body = {"task": "oomguard.examples:noop", "count": n, "name": "replicas-bench"}
        t0 = time.perf_counter()
        response = client.post(url + "/v1/jobs", json=body)
        elapsed = time.perf_counter() - t0
        response.raise_for_status()
        with lock:
            latencies.append(elapsed)
            jobs.append((url, str(response.json()["job_id"]), n))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(one, min(batch, tasks - s)) for s in range(0, tasks, batch)]:
            future.result()
    submitted = time.perf_counter() - t0
    succeeded = 0
    with httpx.Client(timeout=60) as client:
        for i, (_, job_id, _n) in enumerate(jobs):
            url = urls[i % len(urls)]  # any server answers for any job
            while True:
                status = client.get(f"{url}/v1/jobs/{job_id}").json()
                if status["state"] not in ("waiting", "running"):
                    succeeded += int(status["counts"].get("succeeded", 0))
                    break
                time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    ordered = sorted(latencies)
    return {
        "seconds": elapsed,
        "submit_seconds": submitted,
        "tasks_per_s": tasks / elapsed,
        "submit_p50_ms": 1000 * ordered[len(ordered) // 2],
        "submit_p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "succeeded": succeeded,
        "jobs": [job_id for _, job_id, _ in jobs],
    }


def stored_results(store: str, jobs: list[str]) -> tuple[int, int]:
    """(result rows stored for ``jobs``, rows beyond one per task), read from the store."""
    from oomguard.store.factory import open_store

    with open_store(store, create=False, readonly=True) as s:
        rows = 0
        tasks: set[int] = set()
        for job in jobs:
            for task_id, *_ in s.queries.result_rows(job):
                rows += 1
                tasks.add(task_id)
        return rows, rows - len(tasks)


def run_one(config: str, args: argparse.Namespace, cluster: Cluster | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="oomguard-replicas-bench-"))
    try:
        if config == "sqlite":
            store, count, replica = str(tmp / "store.sqlite"), 1, False
        else:
            assert cluster is not None
            store, count, replica = cluster.create_database(), int(config[-1]), True
        with servers(store, count, args.workers, replica, tmp) as urls:
            row = load(urls, args.tasks, args.batch)
        row["stored"], row["duplicated"] = stored_results(store, row.pop("jobs"))
        return row
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=500, help="tasks per POST /v1/jobs")
    ap.add_argument("--workers", type=int, default=2, help="worker processes per server")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    args = ap.parse_args(argv)

    cluster = None
    if any(c.startswith("pg") for c in args.configs):
        cluster, why = start_cluster()
        if cluster is None:
            print(f"cannot start PostgreSQL: {why}", file=sys.stderr)
            return 2
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in args.configs}
    try:
        for r in range(args.rounds):
            order = args.configs[r % len(args.configs):] + args.configs[: r % len(args.configs)]
            for config in order:
                print(f"... round {r + 1} {config}", file=sys.stderr, flush=True)
                results[config].append(run_one(config, args, cluster))
    finally:
        if cluster is not None:
            stop_cluster(cluster)

    rows = []
    bad = 0
    for config, runs in results.items():
        rates = [run["tasks_per_s"] for run in runs]
        p99 = [run["submit_p99_ms"] for run in runs]
        for run in runs:
            bad += run["stored"] != args.tasks or run["duplicated"] != 0
        p50 = statistics.median(r["submit_p50_ms"] for r in runs)
        rows.append([
            config, f"{statistics.median(rates):,.0f}", f"{min(rates):,.0f}-{max(rates):,.0f}",
            f"{statistics.median(p99):.1f}", f"{p50:.1f}",
            sum(r["stored"] for r in runs), sum(r["duplicated"] for r in runs),
        ])
    print(table(["config", "tasks/s (median)", "range", "p99 submit ms", "p50 submit ms",
                 "results stored", "duplicated"], rows))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    emit("replicas", vars(args), results, [f"load average {os.getloadavg()[0]:.1f}"])
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
