"""What does the dashboard cost?

* the loop: one ``Sampler.tick`` that takes a snapshot (with ``--running`` attempts in
  flight), and one that does not (most steps);
* the store: bytes per sample row, and rows written per second by the sampler's thread;
* the pages: how long the jobs page and a job page (data, SVG charts and HTML) take for a
  job of ``--tasks`` tasks run for real (no-op tasks, 2 workers) and ``--samples`` samples;
* with ``--big-jobs``: every page (jobs, searched jobs, failures, work, task) over a store
  of that many jobs of ``--big-tasks`` tasks each in all, inserted in bulk through the
  store's API (``create_job``, ``add_tasks``; 95% succeeded, 4% failed, 1% waiting).

    .venv/bin/python benchmarks/dashboard.py --tasks 20000 --samples 20000
    .venv/bin/python benchmarks/dashboard.py --big-jobs 10000 --big-tasks 1000000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import emit, fmt_bytes, table

import oomguard
from oomguard.scheduler.samples import Sampler
from oomguard.scheduler.view import SchedulerView
from oomguard.store.records import NewTask
from oomguard.store.samples import Sample
from oomguard.store.sqlite import SqliteStore
from oomguard.ui import pages, search, task_page, work
from oomguard.ui.web import _environment


def _view(running: int, jobs: int) -> SchedulerView:
    """What the loop publishes with ``running`` attempts of 64 MiB in flight over ``jobs``
    jobs and 8 workers (this process's pid: their RSS is read for real)."""
    limit = 64 << 20
    in_flight: dict[str, tuple[int, int]] = {}
    for i in range(running):
        n, total = in_flight.get(f"job{i % jobs}", (0, 0))
        in_flight[f"job{i % jobs}"] = (n + 1, total + limit)
    return SchedulerView(
        started=True,
        budget=16 << 30,
        admitted=running * limit,
        running=running,
        workers={f"w{i}": os.getpid() for i in range(8)},
        active_jobs=tuple(f"job{j}" for j in range(jobs)),
        in_flight=in_flight,
    )


def loop_cost(path: str, running: int, repeat: int = 2000) -> dict[str, float]:
    SqliteStore(path).close()
    sampler = Sampler(path, interval=0.0)
    sampler.start()
    view = _view(running, jobs=4)
    taking = []
    for _ in range(repeat):
        t = time.perf_counter()
        sampler.tick(view)
        taking.append(time.perf_counter() - t)
    sampler.interval = 3600.0
    idle = []
    for _ in range(repeat):
        t = time.perf_counter()
        sampler.tick(view)
        idle.append(time.perf_counter() - t)
    t = time.perf_counter()
    sampler.stop(timeout=120)
    if not sampler.written:  # a tick that fails is logged, never raised: say so here
        raise SystemExit("dashboard: the sampler wrote no rows (see the log above)")
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
        views: list[tuple[str, Callable[[], pages.Context], str]] = [
            ("jobs_page", lambda: pages.jobs_page(store), "jobs.html"),
            ("job_page", lambda: pages.job_page(store, job.id), "job.html"),
        ]
        for name, build, template in views:
            times = []
            for _ in range(5):
                t = time.perf_counter()
                html = env.get_template(template).render(read_only=True, login=False, **build())
                times.append(time.perf_counter() - t)
            out[f"{name}_ms"] = statistics.median(times) * 1e3
            out[f"{name}_bytes"] = len(html)
    return out


def big_store_cost(path: str, jobs: int, tasks: int) -> dict[str, Any]:
    """Page times over a store of ``jobs`` jobs and ``tasks`` tasks in all."""
    per_job = max(1, tasks // jobs)
    states = ["succeeded"] * 95 + ["failed"] * 4 + ["ready"]
    t = time.perf_counter()
    with SqliteStore(path) as store:
        rows: list[NewTask] = []
        for j in range(jobs):
            job_id = f"j{j:06d}"
            store.create_job(job_id, name=f"sweep-{j}", fn=f"bench.tasks:f{j % 50}", agg=None,
                             namespace=f"ns{j % 10}")
            for i in range(per_job):
                rows.append(NewTask(job_id=job_id, grp=i, kind="task",
                                    fn=f"bench.tasks:f{j % 50}", params=f'{{"x": {i}}}',
                                    state=states[(i * 7 + j) % 100]))
            if len(rows) >= 20_000:
                store.add_tasks(rows)
                rows = []
        if rows:
            store.add_tasks(rows)
    built_s = time.perf_counter() - t
    env = _environment()
    out: dict[str, Any] = {"build_s": built_s, "jobs": jobs, "tasks": per_job * jobs}
    with SqliteStore(path, readonly=True) as store:
        failed = search.failures_page(store, {}, None).failures
        some_task = failed[0].task_id if failed else 1
        views: list[tuple[str, Any, str, str]] = [
            ("jobs", lambda: pages.jobs_page(store), "jobs.html", ""),
            ("jobs_search", lambda: search.jobs_page(store, {}, None), "jobs_search.html", "view"),
            ("jobs_search_failed", lambda: search.jobs_page(store, {"state": "failed"}, None),
             "jobs_search.html", "view"),
            ("jobs_search_task", lambda: search.jobs_page(store, {"task": "f7"}, None),
             "jobs_search.html", "view"),
            ("failures", lambda: search.failures_page(store, {}, None), "failures.html", "view"),
            ("failures_namespace", lambda: search.failures_page(store, {"namespace": "ns3"},
                                                                ["ns3"]),
             "failures.html", "view"),
            ("work", lambda: work.work_page(store, None), "work.html", "view"),
            ("task", lambda: task_page.task_page(store, some_task), "task.html", ""),
        ]
        for name, build, template, key in views:
            times = []
            for _ in range(5):
                t = time.perf_counter()
                data = build()
                context = {key: data} if key else data
                env.get_template(template).render(read_only=True, login=False, **context)
                times.append(time.perf_counter() - t)
            out[f"{name}_ms"] = statistics.median(times) * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--running", type=int, default=64)
    parser.add_argument("--big-jobs", type=int, default=0)
    parser.add_argument("--big-tasks", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.big_jobs:
        with tempfile.TemporaryDirectory() as tmp:
            big = big_store_cost(str(Path(tmp) / "big.sqlite"), args.big_jobs, args.big_tasks)
        print(table(
            ["page", "median of 5"],
            [[k[:-3], f"{v:.1f} ms"] for k, v in big.items() if k.endswith("_ms")]
            + [[f"store built ({big['jobs']} jobs, {big['tasks']} tasks)",
                f"{big['build_s']:.1f} s"]],
        ))
        emit("dashboard_big", vars(args), big)
        return
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
