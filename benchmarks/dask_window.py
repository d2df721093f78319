"""oomguard on Dask vs plain Dask (``client.map`` + ``gather``): a sweep with replicates and
aggregations, each result ~1 MiB, on the same LocalCluster configuration, one worker
SIGKILLed mid-run.

Measures, for each: wall time, the peak resident memory of the Dask worker processes
(sampled every 0.1 s with psutil), the peak RSS growth of the benchmark process itself
(the Dask client holding gathered results, or oomguard's scheduler), and how many task
executions were recomputations (executions are counted with marker files written by the
task itself).

    .venv/bin/python benchmarks/dask_window.py --params 200
    .venv/bin/python benchmarks/dask_window.py            # 2,000 x 5, as the issue asks

At 2,000 x 5 plain Dask's workers must hold ~10 GiB of results: with 2 x 4 GiB workers
their nannies restart them and they recompute, over and over; ``--plain-timeout`` (600 s)
bounds the wait and the gather, and the row says ``timed_out`` with the futures finished
at that moment.

Prints a table and one final ``JSON: {...}`` line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from _common import emit, quiet_dask_logs, table

MIB = 1024 * 1024


def sim(
    i: int, marker_dir: str, result_mib: float = 1.0, seconds: float = 0.0, replicate: int = 0
) -> dict[str, Any]:
    """A replicate: one marker file per execution, a ~``result_mib`` MiB result."""
    Path(marker_dir, f"{i}-{replicate}-{uuid.uuid4().hex}").touch()
    if seconds:
        time.sleep(seconds)
    return {"i": i, "replicate": replicate, "blob": os.urandom(int(result_mib * MIB))}


def agg(params: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The aggregation of one parameter set's replicates (small)."""
    return {"n": len(results), "bytes": sum(len(r["blob"]) for r in results)}


def agg_plain(i: int, *results: dict[str, Any]) -> dict[str, Any]:
    return agg({"i": i}, list(results))


class Sampler:
    """Peak summed RSS of the cluster's worker processes (pids refreshed as they change),
    and the peak growth of this process: the Dask client, or oomguard's scheduler."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.peak = 0
        self.me = psutil.Process()
        self.own_base = self.me.memory_info().rss
        self.own_peak = 0
        self.pids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def refresh(self) -> None:
        with contextlib.suppress(Exception):  # a worker restarting: keep the last pids
            self.pids = [int(p) for p in self.client.run(os.getpid).values()]

    def _run(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last > 1.0:
                self.refresh()
                last = time.monotonic()
            total = 0
            for pid in self.pids:
                with contextlib.suppress(psutil.Error):
                    total += psutil.Process(pid).memory_info().rss
            self.peak = max(self.peak, total)
            self.own_peak = max(self.own_peak, self.me.memory_info().rss - self.own_base)
            time.sleep(0.1)

    def __enter__(self) -> Sampler:
        self.refresh()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def killer(markers: Path, at: int, sampler: Sampler, done: list[int]) -> Callable[[], None]:
    def run() -> None:
        while len(done) == 0:
            if sum(1 for _ in os.scandir(markers)) >= at:
                sampler.refresh()
                if sampler.pids:
                    os.kill(sampler.pids[0], signal.SIGKILL)
                    done.append(sampler.pids[0])
                return
            time.sleep(0.05)

    return run


def cluster(args: argparse.Namespace) -> tuple[str, Callable[[], None]]:
    from oomguard.cli.dask_options import local_cluster

    return local_cluster(args.workers, args.memory_limit)


class Trial:
    """One side of the comparison: a fresh LocalCluster, its client, the RSS sampler, the
    marker directory that counts executions, and the thread that kills one worker."""

    def __init__(self, args: argparse.Namespace, markers: Path) -> None:
        self.args = args
        self.markers = markers
        self.n_tasks = args.params * args.replicates
        self.killed: list[int] = []

    def __enter__(self) -> Trial:
        from distributed import Client

        self.markers.mkdir()
        self.address, self._close = cluster(self.args)
        try:
            self.client = Client(self.address, set_as_default=False)
            self.sampler = Sampler(self.client).__enter__()
        except BaseException:
            self._close()
            raise
        at = int(self.n_tasks * self.args.kill_at)
        threading.Thread(
            target=killer(self.markers, at, self.sampler, self.killed), daemon=True
        ).start()
        self.t0 = time.monotonic()
        return self

    def row(self, **fields: Any) -> dict[str, Any]:
        """The measurements every side reports, then ``fields``."""
        executions = sum(1 for _ in os.scandir(self.markers))
        return {
            "wall_s": round(time.monotonic() - self.t0, 2),
            "peak_worker_rss_mib": self.sampler.peak // MIB,
            "client_rss_growth_mib": self.sampler.own_peak // MIB,
            "executions": executions,
            "recomputed": executions - self.n_tasks,
            **fields,
            "killed_pid": self.killed,
        }

    def __exit__(self, *exc: object) -> None:
        try:
            self.sampler.__exit__()
            self.client.close()
        finally:
            self._close()


def run_plain(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    with Trial(args, work / "plain-markers") as trial:
        client = trial.client
        sims = {}
        aggs = []
        for i in range(args.params):
            reps = [
                client.submit(
                    sim, i, str(trial.markers), args.result_mib, args.seconds, replicate=r,
                    pure=False,
                )
                for r in range(args.replicates)
            ]
            sims[i] = reps
            aggs.append(client.submit(agg_plain, i, *reps, pure=False))
        # The story's pattern: every future held until the whole job is gathered.
        futures = [f for reps in sims.values() for f in reps]
        # Workers that cannot hold every result are restarted by their nannies and
        # recompute, over and over: give up after --plain-timeout and report that.
        # Gathering ~10 GiB into the client can start the same loop again: the whole
        # wait-and-gather gets the deadline (a thread; the cluster's close ends it).
        got: dict[str, Any] = {}

        def gather() -> None:
            results = client.gather(futures, errors="skip")
            got["aggs_ok"] = len(client.gather(aggs, errors="skip"))
            got["ok"] = sum(1 for r in results if isinstance(r, dict))

        gatherer = threading.Thread(target=gather, daemon=True)
        gatherer.start()
        gatherer.join(args.plain_timeout)
        timed_out = "ok" not in got
        if timed_out:
            ok = sum(1 for f in futures if f.status == "finished")
            aggs_ok = sum(1 for f in aggs if f.status == "finished")
        else:
            ok, aggs_ok = got["ok"], got["aggs_ok"]
        return {"timed_out": timed_out, **trial.row(tasks_ok=ok, aggregations_ok=aggs_ok)}


def run_oomguard(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import oomguard

    with Trial(args, work / "og-markers") as trial:
        params = (
            {
                "i": i,
                "marker_dir": str(trial.markers),
                "result_mib": args.result_mib,
                "seconds": args.seconds,
            }
            for i in range(args.params)
        )
        with oomguard.Runner(
            store=str(work / "og.sqlite"),
            workers=args.workers,
            executor="dask",
            dask_address=trial.address,
        ) as runner:
            job = runner.sweep(
                sim, params, replicates=args.replicates, aggregate=agg, out=str(work / "out")
            )
            status = job.wait(progress=False)
            ex = runner.scheduler.executor
            row = trial.row(
                tasks_ok=status["counts"]["succeeded"] - args.params,
                aggregations_ok=args.params if status["state"] == "succeeded" else None,
                failed_attempts=status["failures_by_class"],
                max_in_flight=ex.counters.max_in_flight,
                max_futures_in_flight=ex.counters.max_futures_in_flight,
                recycles=ex.recycles,
            )
        return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=int, default=2000)
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--result-mib", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=0.0, help="sleep in each replicate")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="4GiB", help="per Dask worker")
    ap.add_argument(
        "--kill-at",
        type=float,
        default=0.5,
        help="SIGKILL one worker when this fraction of replicates has run",
    )
    ap.add_argument("--only", choices=("plain", "oomguard"), default=None)
    ap.add_argument(
        "--plain-timeout",
        type=float,
        default=600.0,
        help="give plain Dask this long (s) before reporting it did not finish",
    )
    args = ap.parse_args(argv)
    quiet_dask_logs()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="oomguard-dask-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "plain"):
            rows["plain_dask"] = run_plain(args, work)
        if args.only in (None, "oomguard"):
            rows["oomguard_dask"] = run_oomguard(args, work)
    cols = (
        "timed_out",
        "wall_s",
        "peak_worker_rss_mib",
        "client_rss_growth_mib",
        "executions",
        "recomputed",
        "tasks_ok",
        "aggregations_ok",
    )
    print(table(["", *cols], [[name, *(row.get(c) for c in cols)] for name, row in rows.items()]))
    emit("dask_window", args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
