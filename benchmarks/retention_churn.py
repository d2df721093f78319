"""Retention under churn: does a long-running server keep its store and its memory flat?

Question: a server with ``--retention 1s`` gets a steady stream of small jobs for 10
minutes. Do its SQLite store (file + WAL), the rows in it and its resident memory stay
flat, while a server without retention (the control, run after it for a shorter time)
grows with every job?

Command (10 minutes, then a 2-minute control):

    .venv/bin/python benchmarks/retention_churn.py --seconds 600 --control-seconds 120

Each arm starts a real ``oomguard serve --workers 2`` on 127.0.0.1 with a fresh store;
a client thread POSTs jobs of ``--tasks-per-job`` ``oomguard.examples:noop`` tasks at
``--rate`` jobs/s (each answered 201, or retried after a 429). Every ``--sample`` seconds
the server process's RSS (psutil), the store's bytes (file + WAL), and the rows of jobs
and tasks in it (a read-only connection) are sampled. Flat means: the last minute's
largest value against the largest after the first minute.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import httpx
import psutil
from _common import MIB, emit, fmt_bytes, table

from oomguard.cli.bench import free_port
from oomguard.cli.process import terminate


def _store_bytes(path: str) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.path.getsize(path + suffix)
    return total


def _rows(path: str) -> tuple[int, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        jobs = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        tasks = db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
    finally:
        db.close()
    return int(jobs), int(tasks)


class Churn:
    """POSTs small jobs at a rate until stopped."""

    def __init__(self, url: str, rate: float, tasks: int) -> None:
        self.url, self.rate, self.tasks = url, rate, tasks
        self.accepted = self.refused = self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {"task": "oomguard.examples:noop", "args": {"x": 1}, "count": self.tasks}
        with httpx.Client(timeout=30) as client:
            t0, n = time.monotonic(), 0
            while not self.stop.is_set():
                try:
                    r = client.post(f"{self.url}/v1/jobs", json=body)
                    if r.status_code == 201:
                        self.accepted += 1
                    else:
                        self.refused += 1
                except httpx.HTTPError:
                    self.errors += 1
                n += 1
                self.stop.wait(max(0.0, t0 + n / self.rate - time.monotonic()))


def run_arm(args: argparse.Namespace, seconds: float, retention: str | None) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="oomguard-churn-")
    store = os.path.join(tmp, "churn.sqlite")
    port = free_port()
    cmd = [sys.executable, "-m", "oomguard.cli.main", "serve", "--store", store,
           "--listen", f"127.0.0.1:{port}", "--workers", "2"]
    if retention:
        cmd += ["--retention", retention]
    log = open(os.path.join(tmp, "serve.log"), "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    samples: list[dict[str, Any]] = []
    churn = Churn(url, args.rate, args.tasks_per_job)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"serve exited {proc.returncode}"
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        me = psutil.Process(proc.pid)
        churn.thread.start()
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(min(args.sample, max(0.0, seconds - elapsed)))
            jobs, tasks = _rows(store)
            samples.append({
                "t": round(time.monotonic() - t0, 1),
                "rss": int(me.memory_info().rss),
                "store_bytes": _store_bytes(store),
                "jobs": jobs,
                "tasks": tasks,
                "accepted": churn.accepted,
            })
    finally:
        churn.stop.set()
        if churn.thread.is_alive():
            churn.thread.join(30)
        terminate(proc, 60)
        log.close()
    after_first = [s for s in samples if s["t"] >= 60] or samples
    last = [s for s in samples if s["t"] >= samples[-1]["t"] - 60]

    def peak(rows: list[dict[str, Any]], key: str) -> int:
        return max(int(s[key]) for s in rows)

    return {
        "retention": retention,
        "seconds": seconds,
        "jobs_accepted": churn.accepted,
        "tasks_accepted": churn.accepted * args.tasks_per_job,
        "refused": churn.refused,
        "errors": churn.errors,
        "rss_first_minute": samples[0]["rss"] if samples else None,
        "rss_max_after_1min": peak(after_first, "rss"),
        "rss_max_last_minute": peak(last, "rss"),
        "store_bytes_max_after_1min": peak(after_first, "store_bytes"),
        "store_bytes_max_last_minute": peak(last, "store_bytes"),
        "store_bytes_end": samples[-1]["store_bytes"],
        "jobs_in_store_end": samples[-1]["jobs"],
        "tasks_in_store_end": samples[-1]["tasks"],
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--control-seconds", type=float, default=120,
                        help="the same churn without retention (0: skip)")
    parser.add_argument("--retention", default="1s")
    parser.add_argument("--rate", type=float, default=5.0, help="jobs per second")
    parser.add_argument("--tasks-per-job", type=int, default=20)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    args = parser.parse_args()
    arms = [run_arm(args, args.seconds, args.retention)]
    if args.control_seconds > 0:
        arms.append(run_arm(args, args.control_seconds, None))
    rows = []
    for arm in arms:
        rows.append([
            arm["retention"] or "none", f"{arm['seconds']:.0f}s", arm["jobs_accepted"],
            fmt_bytes(arm["rss_max_after_1min"]), fmt_bytes(arm["rss_max_last_minute"]),
            fmt_bytes(arm["store_bytes_max_after_1min"]),
            fmt_bytes(arm["store_bytes_max_last_minute"]),
            arm["jobs_in_store_end"], arm["tasks_in_store_end"],
        ])
    print(table(["retention", "ran", "jobs", "RSS max >1min", "RSS max last min",
                 "store max >1min", "store max last min", "jobs kept", "tasks kept"], rows))
    emit("retention_churn", vars(args), arms,
         notes=[f"RSS in MiB = bytes / {MIB}", "samples every --sample seconds"])


if __name__ == "__main__":
    main()
