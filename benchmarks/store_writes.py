"""What the store's hot path costs per task, write by write, on the calling thread's CPU.

Question: of the scheduler loop's CPU per task (``benchmarks/throughput.py``, ``loop us``),
how much is the store's own work, and in which step of a no-op task: taking a window
(``read_ready``: a ``SELECT``; with ``--replica``, ``take_ready``: the ``SELECT`` and its
``queued`` update, in a transaction), the claim (the attempt's insert and ``task_running``,
as ``PendingWrites``), the end (``end_attempt``, the result, ``task_succeeded``)?

Command (a few seconds):

    .venv/bin/python benchmarks/store_writes.py --n 20000 100000

It runs what the loop runs through the public store (``open_store``, ``read_ready``,
``PendingWrites``, ``apply``), in windows of ``--window`` tasks, in a fresh store in a
temporary directory, and reads ``time.thread_time`` around each step (the store's Python
and SQLite's C both count; nothing else runs). Put another checkout's ``src`` first on
``PYTHONPATH`` to measure it the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from typing import Any

from _common import emit, table

from oomguard.store import open_store
from oomguard.store.records import NewTask
from oomguard.store.writes import AttemptRow, PendingWrites

STEPS = ("take", "claim", "end")


def run(n: int, window: int, replica: bool = False) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="oomguard-writes-")
    try:
        store = open_store(os.path.join(tmp, "store.sqlite"))
        store.create_job("j", name="j", fn="oomguard.examples:noop", agg=None)
        rows = [
            NewTask(
                job_id="j",
                grp=i,
                kind="task",
                fn="oomguard.examples:noop",
                params=json.dumps({"x": i}),
                state="ready",
            )
            for i in range(n)
        ]
        for start in range(0, n, 1000):  # as a submission does: 1,000 at a time
            store.add_tasks(rows[start : start + 1000], job_id="j", groups=min(n, start + 1000))
        store.set_job_groups("j", n, sealed=True)
        # A scheduler that owns its store reads its window (read_ready, no write); a
        # replica claims it (take_ready). A checkout from before read_ready claims.
        read = None if replica else getattr(store, "read_ready", None)
        cpu = dict.fromkeys(STEPS, 0.0)
        attempt = 0
        done = 0
        while done < n:
            c0 = time.thread_time()
            if read is not None:
                tasks = read("j", window, n + 1)
            else:
                tasks = store.take_ready("j", window, n + 1)
            c1 = time.thread_time()
            now = time.time()
            claims = PendingWrites()
            for task in tasks:
                attempt += 1
                claims.insert_attempt(
                    AttemptRow(
                        id=attempt,
                        task_id=task.id,
                        n=1,
                        scheduler_id="s" * 32,
                        started_at=now,
                        admitted_bytes=1 << 28,
                        limit_bytes=1 << 28,
                    )
                )
                claims.task_running(task.id, 1, now, attempt)
            c2 = time.thread_time()
            store.apply(claims.take())
            c3 = time.thread_time()
            ends = PendingWrites()
            first = attempt - len(tasks) + 1
            for k, task in enumerate(tasks):
                ends.end_attempt(
                    first + k,
                    task.id,
                    state="succeeded",
                    failure_class=None,
                    evidence=None,
                    peak_bytes=20 << 20,
                    pid=1,
                    worker="w0",
                    ended_at=now,
                )
                ends.result(
                    task.id,
                    job_id="j",
                    attempt_id=first + k,
                    value=b"\x80\x05K\x01.",
                    kind="task",
                    grp=task.grp,
                    n=1,
                    now=now,
                )
            c4 = time.thread_time()
            store.apply(ends.take())
            c5 = time.thread_time()
            # The writes' queuing (PendingWrites) is the recorder's, not the store's.
            cpu["take"] += c1 - c0
            cpu["claim"] += c3 - c2
            cpu["end"] += c5 - c4
            done += len(tasks)
            if not tasks:
                raise RuntimeError("no ready task taken")
        store.close()
        per = {step: cpu[step] / n * 1e6 for step in STEPS}
        per["total"] = sum(per.values())
        return per
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, nargs="+", default=[20000], help="tasks (default 20000)")
    p.add_argument("--window", type=int, default=150, help="tasks a step (default 150)")
    p.add_argument(
        "--replica",
        action="store_true",
        help="take each window as a replica does (take_ready: claimed, state queued)",
    )
    args = p.parse_args(argv)
    results = {str(n): run(n, args.window, args.replica) for n in args.n}
    rows = [[n, *(r[step] for step in (*STEPS, "total"))] for n, r in results.items()]
    print(table(["n", "take us", "claim us", "end us", "total us/task"], rows))
    emit("store_writes", args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
