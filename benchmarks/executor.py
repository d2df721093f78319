"""oomguard.Executor beside ProcessPoolExecutor and loky's reusable executor, in one run.

    .venv/bin/python benchmarks/executor.py --calls 50000 --workers 2 --rounds 3

No-op calls; ``submit`` + ``result`` and ``map(..., chunksize=256)``; the executors are
interleaved (each round runs every executor once, in turn) so a load that changes during
the run weighs on all of them. Each figure is the median over the rounds with its spread
(min-max of the wall times); ``vs pool`` is the executor's speed over
ProcessPoolExecutor's in the same round (median and range over the rounds). Beside each,
the CPU time of this process (its threads: for oomguard.Executor its scheduler and
collector) and of the executor's worker processes, a call: steadier than the wall time on
a shared machine. The load average is printed before and after. The last line is the
executor's own memory per pending future (``--pending`` futures submitted before any
result is taken; 0 to skip).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable

import oomguard

#: clock ticks a second, for the workers' CPU time read from /proc
_TICK = os.sysconf("SC_CLK_TCK")
POOL = "ProcessPoolExecutor"


def noop(x: int) -> int:
    return x


def _submit(ex: concurrent.futures.Executor, n: int) -> None:
    futures = [ex.submit(noop, i) for i in range(n)]
    for f in futures:
        f.result()


def _map(ex: concurrent.futures.Executor, n: int) -> None:
    for _ in ex.map(noop, range(n), chunksize=256):
        pass


def _worker_pids(ex: concurrent.futures.Executor) -> list[int]:
    if isinstance(ex, oomguard.Executor):
        return list(ex._runner.view().workers.values())
    processes = getattr(ex, "_processes", None) or {}  # ProcessPoolExecutor's and loky's
    return [int(pid) for pid in processes]


def _cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a worker replaced meanwhile: its time is lost to the figure
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def _timed(
    run: Callable[[concurrent.futures.Executor, int], None],
    ex: concurrent.futures.Executor,
    n: int,
) -> tuple[float, float, float]:
    """(wall s, this process's CPU s, the workers' CPU s) of one run."""
    pids = _worker_pids(ex)
    w0 = _cpu_of(pids)
    t0, c0 = time.perf_counter(), time.process_time()
    run(ex, n)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, _cpu_of(pids) - w0


def _executors(workers: int) -> dict[str, Callable[[], concurrent.futures.Executor]]:
    from loky import get_reusable_executor

    return {
        "oomguard.Executor": lambda: oomguard.Executor(max_workers=workers),
        POOL: lambda: concurrent.futures.ProcessPoolExecutor(workers),
        "loky": lambda: get_reusable_executor(max_workers=workers),
    }


def _pending_memory(n: int) -> float:
    """Bytes of Python memory per pending future (tracemalloc), the calls not yet run."""
    with oomguard.Executor(max_workers=1) as ex:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        futures = [ex.submit(noop, i) for i in range(n)]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        ex.shutdown(wait=True, cancel_futures=True)
        del futures
    return (after - before) / n


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument(
        "--only", choices=("submit", "map"), default=None, help="run one of the two only"
    )
    args = parser.parse_args()
    runs = [("submit+result", _submit), ("map chunksize=256", _map)]
    if args.only is not None:
        runs = [r for r in runs if r[0].startswith(args.only)]
    print(f"load average at start: {_load()}")
    times: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for _ in range(args.rounds):
        for name, make in _executors(args.workers).items():
            ex = make()
            try:
                ex.submit(noop, 0).result()  # workers started
                for what, run in runs:
                    times.setdefault((name, what), []).append(_timed(run, ex, args.calls))
            finally:
                ex.shutdown(wait=True)
    print(f"load average at end: {_load()}")
    print(f"{args.calls} no-op calls, {args.workers} workers, {args.rounds} rounds")
    print(
        f"{'':20} {'':20} {'median s':>9} {'min-max s':>13} {'calls/s':>9} {'vs pool':>17}"
        f"   CPU us/call: this process, workers"
    )
    for (name, what), ts in sorted(times.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        walls = [w for w, _c, _k in ts]
        t = statistics.median(walls)
        pool = [w for w, _c, _k in times[(POOL, what)]]
        ratios = [p / w for p, w in zip(pool, walls, strict=True)]
        cpu = statistics.median(c for _w, c, _k in ts) / args.calls * 1e6
        kids = statistics.median(k for _w, _c, k in ts) / args.calls * 1e6
        print(
            f"{what:20} {name:20} {t:9.2f} {min(walls):6.2f}-{max(walls):<6.2f}"
            f" {args.calls / t:9.0f} {statistics.median(ratios):5.2f}x"
            f" ({min(ratios):.2f}-{max(ratios):.2f})"
            f"   {cpu:6.1f} {kids:6.1f}"
        )
    if args.pending > 0:
        per = _pending_memory(args.pending)
        print(f"oomguard.Executor: {per:.0f} bytes per pending future ({args.pending} pending)")


if __name__ == "__main__":
    main()
