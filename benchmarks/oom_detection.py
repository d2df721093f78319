"""OOM detection latency: from the kernel's kill to the classified attempt in the store.

Question: when the kernel OOM-kills a worker, how long until oomguard has stored the attempt
with its failure class and the kernel's own evidence? (target: median under 1 s)

Command (under a minute):

    .venv/bin/python benchmarks/oom_detection.py --kills 20

cgroup mode: ``--kills`` tasks ``oomguard.examples:allocate(mib=512)`` under
``worker_memory=128MiB`` (isolation ``cgroup``; the cap is the limit, so each task fails for
good as ``needs_more_memory`` after one kernel kill, no retries). For each attempt:

* kernel kill time: the parsed kernel event's ``timestamp`` (seconds since boot, the
  ``[  566.125705]`` prefix) converted to wall time as ``wall_now - uptime + timestamp``;
  uptime is read from CLOCK_BOOTTIME, the clock /proc/uptime prints (at 10 ms resolution);
* stored time: the attempt's ``ended_at`` (set when the classified outcome is queued for its
  commit); also ``visible``: when a second SQLite connection polling every 10 ms first saw
  the attempt as failed (the commit really happened).

Sanity check: a kill time outside [started_at, ended_at] means the clock conversion is off;
such attempts are counted. The printk clock and CLOCK_BOOTTIME can drift apart on some VMs.

watchdog mode (``--watchdog-kills``, 0 to skip): the same tasks with ``isolation=watchdog``:
there is no kernel event; oomguard samples the worker's RSS every 0.1 s and kills it at the
limit. The latency reported is approximate: ``ended_at - started_at - t_cross``, where
``t_cross`` is the time this process takes to allocate and touch ``worker_memory`` bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

from _common import emit, percentile, table

from oomguard.units import parse_size

FN = "oomguard.examples:allocate"


def boot_offset() -> float:
    """Wall time of boot: wall_now - uptime (best of a few reads)."""
    best = None
    for _ in range(5):
        a = time.time()
        up = time.clock_gettime(time.CLOCK_BOOTTIME)
        b = time.time()
        if best is None or b - a < best[0]:
            best = (b - a, (a + b) / 2 - up)
    assert best is not None
    return best[1]


def proc_uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


class Watcher:
    """Poll the store read-only; record when each attempt is first seen ended."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        db = None
        while not self._stop.is_set():
            try:
                if db is None:
                    db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1)
                rows = db.execute(
                    "SELECT id FROM attempts WHERE ended_at IS NOT NULL").fetchall()
                now = time.time()
                for (aid,) in rows:
                    self.seen.setdefault(int(aid), now)
            except sqlite3.Error:
                pass
            self._stop.wait(0.01)
        if db is not None:
            db.close()

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(isolation: str, kills: int, mib: float, worker_memory: str, workers: int
        ) -> list[dict[str, Any]]:
    import oomguard

    tmp = tempfile.mkdtemp(prefix="oomguard-bench-")
    store = os.path.join(tmp, "store.sqlite")
    try:
        with oomguard.Runner(store=store, workers=workers, worker_memory=worker_memory,
                             isolation=isolation, retries=0) as r:
            r.start()
            with Watcher(store) as w:
                job = r.sweep(FN, ({"mib": mib, "i": i} for i in range(kills)),
                              name=f"oom-detection-{isolation}")
                job.wait(progress=False)
                time.sleep(0.2)
            failed = job.failures()
            rows = []
            for task in failed:
                for a in task.attempts:
                    ev = a.evidence if isinstance(a.evidence, dict) else {}
                    kernel = ev.get("kernel")
                    lines = ev.get("kernel_lines")
                    rows.append({
                        "attempt_id": a.attempt_id,
                        "task_failure_class": task.failure_class,
                        "failure_class": a.failure_class,
                        "started_at": a.started_at,
                        "ended_at": a.ended_at,
                        "visible_at": w.seen.get(a.attempt_id),
                        "kernel_timestamp": (kernel.get("timestamp")
                                             if isinstance(kernel, dict) else None),
                        "kernel_lines": len(lines) if isinstance(lines, list) else 0,
                    })
            succeeded = job.status().counts.get("succeeded", 0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if succeeded:
        print(f"warning: {succeeded} task(s) succeeded under {isolation}", file=sys.stderr)
    return rows


def summarize(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "p90": None, "max": None, "min": None}
    return {"n": len(values), "median": statistics.median(values),
            "p90": percentile(values, 0.9), "max": max(values), "min": min(values)}


def time_to_cross(nbytes: int) -> float:
    """Seconds this process takes to allocate and touch ``nbytes`` (as allocate() does)."""
    from oomguard.examples import allocate

    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        allocate(nbytes / (1024 * 1024))
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20, help="kernel kills in cgroup mode")
    p.add_argument("--watchdog-kills", type=int, default=20, help="kills in watchdog mode")
    p.add_argument("--mib", type=float, default=512, help="what each task allocates (MiB)")
    p.add_argument("--worker-memory", default="128MiB")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--isolation", default="cgroup", choices=["cgroup", "auto"],
                   help="isolation for the kernel-kill run (default cgroup)")
    args = p.parse_args(argv)

    notes: list[str] = []
    results: dict[str, Any] = {}
    offset = boot_offset()
    drift = (time.time() - proc_uptime()) - offset
    results["boot_offset_check_s"] = drift  # /proc/uptime vs CLOCK_BOOTTIME (within 10 ms)

    print(f"... {args.isolation}: {args.kills} kills", file=sys.stderr, flush=True)
    rows = run(args.isolation, args.kills, args.mib, args.worker_memory, args.workers)
    to_stored, to_visible, outside = [], [], 0
    for row in rows:
        ts = row["kernel_timestamp"]
        if ts is None:
            continue
        kill = offset + ts
        row["kill_wall"] = kill
        if not (row["started_at"] - 0.05 <= kill <= row["ended_at"] + 0.05):
            outside += 1
        to_stored.append(row["ended_at"] - kill)
        if row["visible_at"] is not None:
            to_visible.append(row["visible_at"] - kill)
    classes: dict[str, int] = {}
    for row in rows:
        classes[row["failure_class"]] = classes.get(row["failure_class"], 0) + 1
    final: dict[str, int] = {}
    for row in rows:
        final[row["task_failure_class"]] = final.get(row["task_failure_class"], 0) + 1
    cg = {
        "attempts": len(rows),
        "attempt_classes": classes,
        "task_classes": final,
        "with_kernel_event": sum(r["kernel_timestamp"] is not None for r in rows),
        "with_kernel_lines": sum(r["kernel_lines"] > 0 for r in rows),
        "kill_outside_attempt_window": outside,
        "kill_to_ended_at_s": summarize(to_stored),
        "kill_to_visible_s": summarize(to_visible),
        "target_median_s": 1.0,
        "meets_target": bool(to_stored) and statistics.median(to_stored) < 1.0,
        "rows": rows,
    }
    results["cgroup"] = cg

    wd: dict[str, Any] | None = None
    if args.watchdog_kills:
        print(f"... watchdog: {args.watchdog_kills} kills", file=sys.stderr, flush=True)
        wrows = run("watchdog", args.watchdog_kills, args.mib, args.worker_memory, args.workers)
        cross = time_to_cross(parse_size(args.worker_memory))
        lat = [r["ended_at"] - r["started_at"] - cross for r in wrows]
        wclasses: dict[str, int] = {}
        for row in wrows:
            wclasses[row["failure_class"]] = wclasses.get(row["failure_class"], 0) + 1
        wd = {
            "attempts": len(wrows),
            "attempt_classes": wclasses,
            "t_cross_s": cross,
            "attempt_duration_s": summarize([r["ended_at"] - r["started_at"] for r in wrows]),
            "approx_cross_to_ended_at_s": summarize(lat),
            "rows": wrows,
        }
        results["watchdog"] = wd
        notes.append("watchdog latency is approximate: attempt duration minus the time to "
                     f"allocate {args.worker_memory} here ({cross:.3f} s); it includes "
                     "dispatch and the worker's start of the task")
        notes.append("watchdog: a kill oomguard made itself is classified at once (no wait "
                     "for a kernel 'Killed process' line, which never comes for it)")

    print(table(
        ["mode", "attempts", "classes", "kernel lines", "median s", "p90 s", "max s",
         "measured"],
        [[f"{args.isolation} (kernel)", cg["attempts"], cg["attempt_classes"],
          f"{cg['with_kernel_lines']}/{cg['attempts']}", cg["kill_to_ended_at_s"]["median"],
          cg["kill_to_ended_at_s"]["p90"], cg["kill_to_ended_at_s"]["max"],
          "kernel kill -> attempt ended_at"],
         [f"{args.isolation} (kernel)", cg["attempts"], "", "",
          cg["kill_to_visible_s"]["median"], cg["kill_to_visible_s"]["p90"],
          cg["kill_to_visible_s"]["max"], "kernel kill -> seen committed in store"]]
        + ([["watchdog", wd["attempts"], wd["attempt_classes"], "n/a",
             wd["approx_cross_to_ended_at_s"]["median"], wd["approx_cross_to_ended_at_s"]["p90"],
             wd["approx_cross_to_ended_at_s"]["max"], "~ limit crossed -> ended_at"]]
           if wd else [])))
    print(f"tasks failed for good as: {cg['task_classes']}; kernel kill outside its attempt's "
          f"window: {outside}; target median < 1 s: "
          f"{'met' if cg['meets_target'] else 'NOT met'}")
    emit("oom_detection", args, results, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
