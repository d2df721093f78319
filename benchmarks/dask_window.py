"""oomguard on Dask vs plain Dask (``client.map`` + ``gather``): a sweep with replicates and
aggregations, each result ~1 MiB, on the same LocalCluster configuration, one task
outgrowing its worker mid-run (``--grow-mib``, 1.5 x the worker's memory by default;
``--grow-mib 0`` for none).

Measures, for each: wall time, the CPU time of the whole side (``cpu_user_s``,
``cpu_sys_s``: this process, where the LocalCluster's scheduler runs beside the client or
oomguard's scheduler, and every Dask worker process and child it started, reaped when the
cluster closes; on a shared machine the CPU time moves less with the load than the wall
time does; ``cpu_here_s``: this process's share), the peak resident memory of the Dask
worker processes and their children (sampled every 0.1 s with psutil), the peak RSS growth
of the benchmark process itself (the Dask client holding gathered results, or oomguard's
scheduler), how many task executions were recomputations of tasks that had already run
(executions are counted with marker files written by the task itself; the outgrowing
task's own runs are counted apart), and how many Dask worker processes were replaced. On
plain Dask the outgrowing task takes its worker down, and the results held there are
recomputed; oomguard runs each attempt in a child process in its own memory cgroup on the
worker host (``--dask-isolation``), so the task is killed alone, retried larger up to
``--memory-limit``, and ends ``needs_more_memory``.

    .venv/bin/python benchmarks/dask_window.py --params 200 --memory-limit 1GiB
    .venv/bin/python benchmarks/dask_window.py            # 2,000 x 5, as the issue asks
    .venv/bin/python benchmarks/dask_window.py --params 200 --grow-mib 0 --pairs 5

``--pairs N`` runs N pairs, interleaved (plain Dask first in every other pair), and adds
oomguard's ratios to plain Dask within each pair (wall, and CPU: user + system), their
medians and ranges, and the load average before each run.

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
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from _common import emit, quiet_dask_logs, table

MIB = 1024 * 1024


def sim(
    i: int,
    marker_dir: str,
    result_mib: float = 1.0,
    seconds: float = 0.0,
    replicate: int = 0,
    grow_mib: float = 0.0,
) -> dict[str, Any]:
    """A replicate: one marker file per execution, a ~``result_mib`` MiB result; its
    replicate 0 first allocates (and touches) ``grow_mib`` MiB when that is set."""
    Path(marker_dir, f"{i}-{replicate}-{uuid.uuid4().hex}").touch()
    if grow_mib and replicate == 0:
        from oomguard.examples import allocate

        allocate(grow_mib)
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
                    # With its children: oomguard runs attempts in child processes.
                    proc = psutil.Process(pid)
                    total += proc.memory_info().rss
                    for child in proc.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            total += child.memory_info().rss
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


def cluster(args: argparse.Namespace) -> tuple[str, Callable[[], None]]:
    from oomguard.cli.dask_options import local_cluster

    # oomguard's children on the Dask workers load this file by its path only (as local
    # workers do): its sibling _common must be importable there too.
    here = str(Path(__file__).resolve().parent)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *filter(None, paths)])

    return local_cluster(args.workers, args.memory_limit)


class Trial:
    """One side of the comparison: a fresh LocalCluster, its client, the RSS sampler, the
    marker directory that counts executions, and the Dask worker processes at the start."""

    def __init__(self, args: argparse.Namespace, markers: Path) -> None:
        self.args = args
        self.markers = markers
        self.n_tasks = args.params * args.replicates
        #: the replicate that outgrows its worker (none with --grow-mib 0)
        self.grower = f"{args.params // 2}-0" if args.grow_mib else None
        self.pids: list[int] = []
        #: the row :meth:`row` returned: the CPU times are added once the cluster is closed
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Trial:
        from distributed import Client

        self.times = os.times()
        self.markers.mkdir()
        self.address, self._close = cluster(self.args)
        try:
            self.client = Client(self.address, set_as_default=False)
            self.sampler = Sampler(self.client).__enter__()
        except BaseException:
            self._close()
            raise
        self.pids = list(self.sampler.pids)
        self.t0 = time.monotonic()
        return self

    def param(self, i: int) -> dict[str, Any]:
        grow = self.args.grow_mib if self.grower == f"{i}-0" else 0.0
        return {
            "i": i,
            "marker_dir": str(self.markers),
            "result_mib": self.args.result_mib,
            "seconds": self.args.seconds,
            "grow_mib": grow,
        }

    def row(self, **fields: Any) -> dict[str, Any]:
        """The measurements every side reports, then ``fields``."""
        wall = round(time.monotonic() - self.t0, 2)
        runs: dict[str, int] = {}
        for entry in os.scandir(self.markers):
            task = entry.name.rsplit("-", 1)[0]
            runs[task] = runs.get(task, 0) + 1
        grower_runs = runs.pop(self.grower, 0) if self.grower else 0
        others = self.n_tasks - (1 if self.grower else 0)
        self.sampler.refresh()
        self.result = {
            "wall_s": wall,
            "peak_worker_rss_mib": self.sampler.peak // MIB,
            "client_rss_growth_mib": self.sampler.own_peak // MIB,
            "executions": sum(runs.values()) + grower_runs,
            # runs of tasks that had run already (the outgrowing task's retries apart)
            "recomputed": sum(n - 1 for n in runs.values() if n > 1),
            "never_ran": others - len(runs),
            "outgrowing_runs": grower_runs,
            "workers_replaced": len(set(self.pids) - set(self.sampler.pids)),
            **fields,
        }
        return self.result

    def __exit__(self, *exc: object) -> None:
        try:
            self.sampler.__exit__()
            self.client.close()
        finally:
            self._close()
        # Every process of the cluster has been reaped: its CPU time is in ours.
        end = os.times()
        user = end.user - self.times.user + end.children_user - self.times.children_user
        system = end.system - self.times.system
        system += end.children_system - self.times.children_system
        here = end.user - self.times.user + end.system - self.times.system
        self.result.update(
            cpu_user_s=round(user, 2), cpu_sys_s=round(system, 2), cpu_here_s=round(here, 2)
        )


def run_plain(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    with Trial(args, work / "plain-markers") as trial:
        client = trial.client
        sims = {}
        aggs = []
        for i in range(args.params):
            reps = [
                client.submit(sim, **trial.param(i), replicate=r, pure=False)
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
        # The row itself: the CPU times are added to it once the cluster is closed.
        return trial.row(timed_out=timed_out, tasks_ok=ok, aggregations_ok=aggs_ok)


def run_oomguard(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import oomguard
    from oomguard.executors.dask.executor import DaskExecutor

    with Trial(args, work / "og-markers") as trial:
        params = (trial.param(i) for i in range(args.params))
        with oomguard.Runner(
            store=str(work / "og.sqlite"),
            workers=args.workers,
            executor="dask",
            dask_address=trial.address,
            worker_memory=args.memory_limit,
            dask_isolation=args.dask_isolation,
        ) as runner:
            job = runner.sweep(
                sim, params, replicates=args.replicates, aggregate=agg, out=str(work / "out")
            )
            status = job.wait(progress=False)
            assert runner.scheduler is not None
            ex = runner.scheduler.executor
            assert isinstance(ex, DaskExecutor), ex
            failures = job.failures()
            finals = Counter(f["failure_class"] for f in failures)
            errors = [f["error"] for f in failures if f["failure_class"] == "error"]
            aggs_ok = args.params - finals["upstream_failed"]
            row = trial.row(
                tasks_ok=status["counts"]["succeeded"] - aggs_ok,
                aggregations_ok=aggs_ok,
                failed_attempts=status["failures_by_class"],
                failed_for_good=dict(finals),
                first_error=errors[0] if errors else None,
                isolation=sorted(set(ex.isolation_modes.values())),
                max_in_flight=ex.counters.max_in_flight,
                max_futures_in_flight=ex.counters.max_futures_in_flight,
                # results aggregations took from another worker (None: a version without)
                held_from_peers=getattr(ex.counters, "held_from_peers", None),
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
        "--grow-mib",
        type=float,
        default=None,
        help="what one replicate allocates, past its worker's memory [1.5 x --memory-limit]",
    )
    ap.add_argument(
        "--dask-isolation",
        choices=("auto", "cgroup", "watchdog", "thread"),
        default="auto",
        help="oomguard's isolation of attempts on the Dask workers",
    )
    ap.add_argument("--only", choices=("plain", "oomguard"), default=None)
    ap.add_argument(
        "--pairs", type=int, default=1, help="pairs run, interleaved (plain first every other)"
    )
    ap.add_argument(
        "--plain-timeout",
        type=float,
        default=600.0,
        help="give plain Dask this long (s) before reporting it did not finish",
    )
    args = ap.parse_args(argv)
    if args.grow_mib is None:
        from oomguard.units import parse_size

        args.grow_mib = 1.5 * parse_size(args.memory_limit) / MIB
    quiet_dask_logs()
    if args.pairs > 1:
        return pairs(args)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="oomguard-dask-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "plain"):
            rows["plain_dask"] = run_plain(args, work)
        if args.only in (None, "oomguard"):
            rows["oomguard_dask"] = run_oomguard(args, work)
    print(
        table(
            ["", *COLUMNS], [[name, *(row.get(c) for c in COLUMNS)] for name, row in rows.items()]
        )
    )
    emit("dask_window", args, rows)
    return 0


COLUMNS = (
    "timed_out",
    "wall_s",
    "cpu_user_s",
    "cpu_sys_s",
    "cpu_here_s",
    "peak_worker_rss_mib",
    "client_rss_growth_mib",
    "executions",
    "recomputed",
    "outgrowing_runs",
    "workers_replaced",
    "tasks_ok",
    "aggregations_ok",
)


def _cpu(row: dict[str, Any]) -> float:
    return float(row["cpu_user_s"]) + float(row["cpu_sys_s"])


def pairs(args: argparse.Namespace) -> int:
    """``--pairs``: the two sides in turn, each pair's ratios, their medians and ranges."""
    runs: list[dict[str, Any]] = []
    for n in range(args.pairs):
        order = ("plain", "oomguard") if n % 2 == 0 else ("oomguard", "plain")
        pair: dict[str, Any] = {"pair": n}
        for side in order:
            load = os.getloadavg()[0]
            with tempfile.TemporaryDirectory(prefix="oomguard-dask-bench-") as tmp:
                run = run_plain if side == "plain" else run_oomguard
                pair[side] = dict(run(args, Path(tmp)), load_before=round(load, 2))
        plain, og = pair["plain"], pair["oomguard"]
        pair["wall_ratio"] = round(og["wall_s"] / plain["wall_s"], 3)
        pair["cpu_ratio"] = round(_cpu(og) / _cpu(plain), 3)
        runs.append(pair)
        print(
            f"pair {n} ({order[0]} first): wall {plain['wall_s']} / {og['wall_s']} s, "
            f"cpu {_cpu(plain):.2f} / {_cpu(og):.2f} s (plain / oomguard), "
            f"ratios {pair['wall_ratio']} wall, {pair['cpu_ratio']} cpu, "
            f"load {plain['load_before']} / {og['load_before']}",
            flush=True,
        )
    summary: dict[str, Any] = {}
    for key in ("wall_ratio", "cpu_ratio"):
        values = [p[key] for p in runs]
        summary[key] = {
            "median": round(statistics.median(values), 3),
            "min": min(values),
            "max": max(values),
        }
    for side in ("plain", "oomguard"):
        summary[f"{side}_wall_s_median"] = statistics.median(p[side]["wall_s"] for p in runs)
        summary[f"{side}_cpu_s_median"] = round(statistics.median(_cpu(p[side]) for p in runs), 2)
    loads = [p[side]["load_before"] for p in runs for side in ("plain", "oomguard")]
    summary["load_before"] = {"min": min(loads), "max": max(loads)}
    print(
        table(
            ["", "median", "min", "max"],
            [
                [k, summary[k]["median"], summary[k]["min"], summary[k]["max"]]
                for k in ("wall_ratio", "cpu_ratio")
            ],
        )
    )
    emit("dask_window", args, {"pairs": runs, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
