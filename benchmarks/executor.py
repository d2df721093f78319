"""oomguard.Executor beside ProcessPoolExecutor and loky's reusable executor, in one run.

    .venv/bin/python benchmarks/executor.py --calls 50000 --workers 2 --rounds 2

No-op calls; ``submit`` + ``result`` and ``map(..., chunksize=256)``; the executors are
interleaved (each round runs every executor once, in turn) so a load that changes during
the run weighs on all of them. Beside each wall time, the CPU time of this process (its
threads: for oomguard.Executor its scheduler and collector, not the workers), steadier
than the wall time on a shared machine. The last line is the executor's own memory per
pending future (``--pending`` futures submitted before any result is taken).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable

import oomguard


def noop(x: int) -> int:
    return x


def _submit(ex: concurrent.futures.Executor, n: int) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    futures = [ex.submit(noop, i) for i in range(n)]
    for f in futures:
        f.result()
    return time.perf_counter() - t0, time.process_time() - c0


def _map(ex: concurrent.futures.Executor, n: int) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in ex.map(noop, range(n), chunksize=256):
        pass
    return time.perf_counter() - t0, time.process_time() - c0


def _executors(workers: int) -> dict[str, Callable[[], concurrent.futures.Executor]]:
    from loky import get_reusable_executor

    return {
        "oomguard.Executor": lambda: oomguard.Executor(max_workers=workers),
        "ProcessPoolExecutor": lambda: concurrent.futures.ProcessPoolExecutor(workers),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pending", type=int, default=10_000)
    args = parser.parse_args()
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for name, make in _executors(args.workers).items():
            ex = make()
            try:
                ex.submit(noop, 0).result()  # workers started
                for what, run in (("submit+result", _submit), ("map chunksize=256", _map)):
                    times.setdefault((name, what), []).append(run(ex, args.calls))
            finally:
                ex.shutdown(wait=True)
    print(f"{args.calls} no-op calls, {args.workers} workers, median of {args.rounds} rounds")
    for (name, what), ts in sorted(times.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        t = statistics.median(w for w, _c in ts)
        cpu = statistics.median(c for _w, c in ts)
        print(
            f"{what:20} {name:22} {t:8.2f} s {args.calls / t:10.0f} calls/s"
            f"   this process's CPU {cpu:6.2f} s ({cpu / args.calls * 1e6:5.1f} us/call)"
        )
    per = _pending_memory(args.pending)
    print(f"oomguard.Executor: {per:.0f} bytes per pending future ({args.pending} pending)")


if __name__ == "__main__":
    main()
