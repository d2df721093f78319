"""What does the dashboard cost?

* the loop: one ``Sampler.tick`` that takes a snapshot (with ``--running`` attempts in
  flight), and one that does not (most steps);
* the store: bytes per sample row, and rows written per second by the sampler's thread;
* the pages: how long the jobs page and a job page (data, SVG charts and HTML) take for a
  job of ``--tasks`` tasks run for real (no-op tasks, 2 workers) and ``--samples`` samples.

    .venv/bin/python benchmarks/dashboard.py --tasks 20000 --samples 20000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _common import emit, fmt_bytes, table

import oomguard
from oomguard.scheduler.samples import Sampler
from oomguard.store.samples import Sample
from oomguard.store.sqlite import SqliteStore
from oomguard.ui import pages
from oomguard.ui.web import _environment


def _fake_scheduler(running: int, jobs: int) -> Any:
    runs = {
        i: SimpleNamespace(task=SimpleNamespace(job_id=f"job{i % jobs}"), limit=64 << 20)
        for i in range(running)
    }
    return SimpleNamespace(
        executor=SimpleNamespace(worker_pids=lambda: {f"w{i}": os.getpid() for i in range(8)}),
        recorder=SimpleNamespace(running=runs),
        budget=16 << 30,
        admission=SimpleNamespace(total=running * (64 << 20)),
        _active=[f"job{j}" for j in range(jobs)],
    )


def loop_cost(path: str, running: int, repeat: int = 2000) -> dict[str, float]:
    SqliteStore(path).close()
    sampler = Sampler(path, interval=0.0)
    sampler.start()
    scheduler = _fake_scheduler(running, jobs=4)
    taking = []
    for _ in range(repeat):
        t = time.perf_counter()
        sampler.tick(scheduler)
        taking.append(time.perf_counter() - t)
    sampler.interval = 3600.0
    idle = []
    for _ in range(repeat):
        t = time.perf_counter()
        sampler.tick(scheduler)
        idle.append(time.perf_counter() - t)
    t = time.perf_counter()
    sampler.stop(timeout=120)
    return {
        "tick_snapshot_us": statistics.median(taking) * 1e6,
        "tick_idle_us": statistics.median(idle) * 1e6,
        "rows_written": sampler.written,
        "writer_drain_s": time.perf_counter() - t,
    }


def store_cost(path: str, n: int) -> dict[str, float]:
    with SqliteStore(path) as store:
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = Path(path).stat().st_size
    workers = {f"w{i}": 300 << 20 for i in range(8)}
    rows = [Sample("bench", 1e9 + i, 16 << 30, 1 << 30, 1 << 29, 4, workers) for i in range(n)]
    with SqliteStore(path) as store:
        t = time.perf_counter()
        for i in range(0, n, 100):  # as the sampler writes: a few rows a transaction
            store.samples.record(rows[i : i + 100])
        seconds = time.perf_counter() - t
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    grown = Path(path).stat().st_size - before
    return {"rows_per_s": n / seconds, "bytes_per_row": grown / n}


def page_cost(path: str, tasks: int, samples: int) -> dict[str, Any]:
    with oomguard.Runner(store=path, workers=2, isolation="watchdog") as runner:
        job = runner.sweep("oomguard.examples:noop", ({"x": i} for i in range(tasks)))
        t = time.perf_counter()
        job.wait(timeout=3600, progress=False)
        run_s = time.perf_counter() - t
    with SqliteStore(path) as store:
        start = time.time() - samples
        store.samples.record(
            [Sample(job.id, start + i, 16 << 30, 1 << 30, 1 << 30, 2, {"w1": 1, "w2": 2})
             for i in range(samples)]
        )
    env = _environment()
    out: dict[str, Any] = {"run_s": run_s}
    with SqliteStore(path, readonly=True) as store:
        for name, build, template in (
            ("jobs_page", lambda: pages.jobs_page(store), "jobs.html"),
            ("job_page", lambda: pages.job_page(store, job.id), "job.html"),
        ):
            times = []
            for _ in range(5):
                t = time.perf_counter()
                html = env.get_template(template).render(read_only=True, login=False, **build())
                times.append(time.perf_counter() - t)
            out[f"{name}_ms"] = statistics.median(times) * 1e3
            out[f"{name}_bytes"] = len(html)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--running", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        loop = loop_cost(str(Path(tmp) / "loop.sqlite"), args.running)
        store = store_cost(str(Path(tmp) / "rows.sqlite"), args.samples)
        page = page_cost(str(Path(tmp) / "pages.sqlite"), args.tasks, args.samples)
    print(table(
        ["what", "value"],
        [
            ["tick with a snapshot (loop thread)", f"{loop['tick_snapshot_us']:.1f} µs"],
            ["tick without one (most steps)", f"{loop['tick_idle_us']:.2f} µs"],
            ["sample rows written per second", f"{store['rows_per_s']:.0f}"],
            ["bytes per sample row (8 workers)", fmt_bytes(store["bytes_per_row"])],
            [f"no-op job of {args.tasks} tasks ran in", f"{page['run_s']:.1f} s"],
            ["jobs page", f"{page['jobs_page_ms']:.1f} ms"],
            [f"job page ({args.tasks} tasks, {args.samples} samples)",
             f"{page['job_page_ms']:.1f} ms, {fmt_bytes(page['job_page_bytes'])}"],
        ],
    ))
    emit("dashboard", vars(args), {"loop": loop, "store": store, "pages": page})


if __name__ == "__main__":
    main()
