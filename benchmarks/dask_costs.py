"""What each Dask task of oomguard's costs around its attempts, the old way and the new,
interleaved in one run on one LocalCluster (1 worker, 1 thread; its scheduler runs in this
process):

* **the start check**: a Dask task asking the scheduler whether its key ran before
  (``run_on_scheduler(first_start)``, one round trip, as every Dask task did) against
  naming its key as started on the worker's stream (``Worker.log_event``, no wait; the
  scheduler's ``StartGuard`` refuses reruns): seconds on the worker, per Dask task;
* **the way back**: gathering one answer of ``--outcomes`` results of ``--result-mib``
  MiB through the Dask scheduler (as the executor did) against straight from the worker,
  in band and out of band (``Outcome.__reduce_ex__``): wall seconds per answer, and the
  CPU seconds of this process (client and scheduler) and of the worker;
* **the way up** (``--only up``, no Dask): a group of ``--outcomes`` results of
  ``--result-mib`` MiB each run in a child of a Dask worker's pool (``HostPool``, started
  in this process, which stands for the Dask worker), ``--groups`` times: the CPU seconds
  of this process and of the child per result, beyond making the result (the child
  pickles ``bytes(n)``). Run it on two versions to compare them
  (``PYTHONPATH=<other checkout>/src``);
* **the way down** (``--only down``, no Dask): what the executor's process does to make
  each result durable, ``--groups`` groups of ``--outcomes`` results (a dict holding
  ``--result-mib`` MiB of random bytes, pickled as a child pickles it), the ways
  interleaved: its digest (SHA-256, the blob's name, beside BLAKE2b), its blob file
  (``BlobFiles.put``: the digest, the file written and fsync'd), and the group as a
  Parquet part written with pyarrow's defaults (``pa.array`` of each column,
  ``write_table``: as before) or as oomguard writes it (``rows_to_table``, ``write_options``):
  CPU milliseconds per result (this process: user + system).

    .venv/bin/python benchmarks/dask_costs.py --checks 300 --gathers 20
    .venv/bin/python benchmarks/dask_costs.py --only up --groups 40
    .venv/bin/python benchmarks/dask_costs.py --only down --groups 20

Prints a table and one final ``JSON: {...}`` line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import psutil
from _common import emit, quiet_dask_logs, table

MIB = 1024 * 1024


def check(mode: str) -> float:
    """On the worker: the seconds one start check of ``mode`` keeps the Dask task."""
    from distributed import get_client, get_worker

    from oomguard.executors.dask.remote import STARTED_TOPIC
    from oomguard.executors.dask.remote.scheduler import first_start

    worker = get_worker()
    key = str(worker.get_current_task())
    t0 = time.perf_counter()
    if mode == "round_trip":
        get_client().run_on_scheduler(first_start, key=key)
    else:
        worker.log_event(STARTED_TOPIC, key)
    return time.perf_counter() - t0


def answer(n: int, mib: float) -> Any:
    """On the worker: a group's answer of ``n`` results of ``mib`` MiB each."""
    from oomguard.executors.dask.remote.answers import GroupAnswer, Outcome

    blob = int(mib * MIB)
    outcomes = tuple(Outcome(i, True, os.urandom(blob)) for i in range(n))
    return GroupAnswer("w", os.getpid(), outcomes)


def set_out_of_band(threshold: int) -> None:
    """On the worker: results from ``threshold`` bytes go out of band."""
    from oomguard.executors.dask.remote import answers

    answers.OUT_OF_BAND_BYTES = threshold


def make(n: int) -> bytes:
    """In the child: a result of ``n`` bytes (zero pages: making it costs little)."""
    return bytes(n)


def way_up(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """CPU per result on the way from a child of the pool up to the Dask worker."""
    import pickle

    from oomguard.executors.dask.remote.heap import large_buffers_from_heap
    from oomguard.executors.dask.remote.host_pool import HostPool
    from oomguard.worker.calls import PickledCall

    large_buffers_from_heap()  # as the worker plugin sets a Dask worker up
    pool = HostPool(task_dir=os.path.dirname(os.path.abspath(__file__)))
    pool.start()
    try:
        assert pool.isolated, pool.reason
        n = int(args.result_mib * MIB)
        call = pickle.dumps(((n,), {}))
        me = psutil.Process()
        here: list[float] = []
        child: list[float] = []
        wall: list[float] = []
        attempt = 0
        for _ in range(args.groups):
            items = []
            for _ in range(args.outcomes):
                attempt += 1
                items.append(PickledCall(attempt, "dask_costs:make", call))
            kids = me.children()
            before = cpu(me), sum(cpu(k) for k in kids)
            t0 = time.perf_counter()
            outcomes = pool.run(list(items), None)
            wall.append(time.perf_counter() - t0)
            here.append(cpu(me) - before[0])
            child.append(sum(cpu(k) for k in kids) - before[1])
            assert all(o.ok and o.payload is not None and len(o.payload) > n for o in outcomes)
            del outcomes
    finally:
        pool.close()
    # CPU times tick every 10 ms: summed over the groups, not a median of each
    per = 1e3 / (args.outcomes * args.groups)
    return {
        "up": {
            "mode": pool.mode,
            "wall_ms_per_result": round(sum(wall) * per, 3),
            "cpu_worker_ms_per_result": round(sum(here) * per, 3),
            "cpu_child_ms_per_result": round(sum(child) * per, 3),
        }
    }


def way_down(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """CPU per result of making it durable in the executor's process, each way in turn."""
    import hashlib
    import pickle
    import tempfile
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from oomguard.results.parquet import _write_atomic, result_row, rows_to_table
    from oomguard.store.factory import open_store

    n = int(args.result_mib * MIB)

    def group() -> list[bytes]:
        return [
            pickle.dumps({"i": i, "blob": os.urandom(n)}, protocol=pickle.HIGHEST_PROTOCOL)
            for i in range(args.outcomes)
        ]

    def rows(payloads: list[bytes]) -> list[dict[str, object]]:
        return [result_row(i, 0, None, '{"i": 1}', 1, p, False) for i, p in enumerate(payloads)]

    def part_defaults(payloads: list[bytes], path: Path) -> None:
        columns: dict[str, list[object]] = {}
        for row in rows(payloads):
            for key, value in row.items():
                columns.setdefault(key, []).append(value)
        table = pa.table({key: pa.array(col) for key, col in columns.items()})
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    with tempfile.TemporaryDirectory(prefix="oomguard-dask-costs-") as tmp:
        store = open_store(str(Path(tmp, "s.sqlite")))
        blobs = store.blobs
        part = Path(tmp, "part.parquet")
        ways: dict[str, Callable[[list[bytes]], object]] = {
            "digest_sha256": lambda g: [hashlib.sha256(p).hexdigest() for p in g],
            "digest_blake2b": lambda g: [hashlib.blake2b(p).hexdigest() for p in g],
            "blob_files": lambda g: [blobs.put(p) for p in g],
            "part_pyarrow_defaults": lambda g: part_defaults(g, part),
            "part_oomguard": lambda g: _write_atomic(rows_to_table(rows(g)), part),
        }
        spent: dict[str, float] = dict.fromkeys(ways, 0.0)
        order = list(ways)
        for k in range(args.groups):
            for way in order[k % len(order) :] + order[: k % len(order)]:
                payloads = group()  # fresh bytes for every way: none is written twice
                t0 = time.process_time()
                ways[way](payloads)
                spent[way] += time.process_time() - t0
        store.close()
    per = 1e3 / (args.outcomes * args.groups)
    return {"down": {way: round(total * per, 3) for way, total in spent.items()}}


def cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checks", type=int, default=300, help="Dask tasks per start check kind")
    ap.add_argument("--gathers", type=int, default=20, help="answers gathered per way back")
    ap.add_argument("--outcomes", type=int, default=32)
    ap.add_argument("--result-mib", type=float, default=1.0)
    ap.add_argument("--groups", type=int, default=40, help="groups run up from a child")
    ap.add_argument("--only", choices=("up", "down"), default=None, help="only the way up, or down")
    args = ap.parse_args(argv)
    quiet_dask_logs()
    if args.only in ("up", "down"):
        load = os.getloadavg()
        up = way_up(args) if args.only == "up" else way_down(args)
        ((name, row),) = up.items()
        print(table(["", *row], [[name, *row.values()]]))
        print(f"load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        emit("dask_costs", args, up, notes=[f"load average at the start: {load}"])
        return 0

    from distributed import Client, LocalCluster

    from oomguard.executors.dask.cluster import register_start_guard
    from oomguard.executors.dask.remote import KEY_PREFIX
    from oomguard.executors.dask.remote.answers import OUT_OF_BAND_BYTES

    load = os.getloadavg()
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = Client(cluster, set_as_default=False)
    try:
        assert register_start_guard(client)
        worker = psutil.Process(next(iter(client.run(os.getpid).values())))
        me = psutil.Process()
        checks: dict[str, list[float]] = {"round_trip": [], "noted": []}
        for _ in range(args.checks):
            for mode in checks:  # interleaved, one Dask task at a time
                key = f"{KEY_PREFIX}bench-{uuid.uuid4().hex}"
                checks[mode].append(client.submit(check, mode, key=key, pure=False).result())
        ways: dict[str, list[float]] = {
            "via_scheduler": [],
            "direct_in_band": [],
            "direct_out_of_band": [],
        }
        spent: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
        for _ in range(args.gathers):
            for way in ways:
                client.run(
                    set_out_of_band, 1 << 62 if way == "direct_in_band" else OUT_OF_BAND_BYTES
                )
                future = client.submit(answer, args.outcomes, args.result_mib, pure=False)
                while future.status != "finished":  # made there, not gathered yet
                    time.sleep(0.005)
                here, there = cpu(me), cpu(worker)
                t0 = time.perf_counter()
                got = client.gather(future, direct=way != "via_scheduler")
                ways[way].append(time.perf_counter() - t0)
                spent[way].append((cpu(me) - here, cpu(worker) - there))
                assert len(got.outcomes) == args.outcomes
                assert all(type(o.payload) is bytes for o in got.outcomes)
                future.release()
                del got
    finally:
        client.close()
        cluster.close()

    results: dict[str, dict[str, float]] = {}
    for mode, values in checks.items():
        results[f"check_{mode}"] = {
            "median_us": round(statistics.median(values) * 1e6, 1),
            "mean_us": round(statistics.fmean(values) * 1e6, 1),
        }
    for way, values in ways.items():
        results[f"gather_{way}"] = {
            "median_ms": round(statistics.median(values) * 1e3, 2),
            "cpu_here_ms": round(statistics.median(h for h, _ in spent[way]) * 1e3, 2),
            "cpu_worker_ms": round(statistics.median(w for _, w in spent[way]) * 1e3, 2),
        }
    rows = [[name, *(f"{k}={v}" for k, v in r.items())] for name, r in results.items()]
    print(table(["", "a", "b", "c"], [row + [""] * (4 - len(row)) for row in rows]))
    print(f"load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    emit("dask_costs", args, results, notes=[f"load average at the start: {load}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
