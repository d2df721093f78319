"""Chaos: random jobs of misbehaving tasks through the real CLI; is anything lost, stuck or left?

Question: whatever mix of failures a job's tasks bring (errors, ``MemoryError``, kernel OOM
kills, watchdog kills, timeouts, crashes by signal, exits, unpicklable results, lone
surrogates in results and error messages, large results in blob files, blob files deleted
under the scheduler), does ``oomguard run`` always finish, exit with the documented code,
write every succeeded task's row to Parquet exactly once, give every failed task a failure
class, and leave no attempt running, no worker process and no memory cgroup behind?

Command (a few seconds per seed on 2 cores; a hang costs ``--timeout-per-run``; needs root
and a writable memory cgroup for the kernel OOM kills):

    .venv/bin/python benchmarks/chaos.py --seeds 20 --dask-every 5

Each seed makes one job (``chaos_plan.make_plan``) of the task kinds in ``chaos_tasks.py``,
run as ``python -m oomguard.cli.main run .../chaos_tasks.py:chaos --params p.jsonl --store
s.db ...`` in a fresh temporary directory under a hard ``--timeout-per-run``, then checked
(``chaos_check``: hangs, exit code, Parquet rows lost / duplicated, unclassified failures,
classes other than the kind must give, cgroups and processes left). One line per seed, a
table of totals and of failure classes, and with ``--json`` a final ``JSON: {...}`` line.
Exits 1 if any run broke any check (``--keep`` keeps those runs' directories).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chaos_check import Findings, check_run, clean_up, run_plan
from chaos_plan import Plan, make_plan


@dataclass
class Outcome:
    """A seed's plan, how its run ended, and what it broke."""

    plan: Plan
    rc: int | None
    seconds: float
    findings: Findings
    workdir: str | None
    stderr_tail: str
    store_at_hang: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return not self.findings.problems()


def run_seed(seed: int, *, timeout: float = 90.0, dask_every: int = 0, dask: bool | None = None,
             keep_failed: bool = False, base: str | None = None) -> Outcome:
    """Make, run and check the job of ``seed`` in a new directory below ``base``; remove
    the directory unless the run broke a check and ``keep_failed``."""
    plan = make_plan(seed, dask_every=dask_every, dask=dask)
    workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-", dir=base))
    ran = run_plan(plan, workdir, timeout)
    try:
        findings = check_run(plan, ran)
    finally:
        clean_up(ran)
    keep = keep_failed and bool(findings.problems())
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return Outcome(plan, ran.rc, ran.seconds, findings, str(workdir) if keep else None,
                   ran.stderr[-3000:], ran.store_at_hang)


def _dask_available() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10, help="how many seeds (jobs) to run")
    p.add_argument("--start", type=int, default=0, help="the first seed")
    p.add_argument("--timeout-per-run", type=float, default=90.0,
                   help="seconds a run may take before it counts as a hang")
    p.add_argument("--dask-every", type=int, default=0,
                   help="run every K-th seed on Dask (--dask-local 2); 0: never")
    p.add_argument("--keep", action="store_true", help="keep the directories of failed runs")
    p.add_argument("--json", action="store_true", help="print a final JSON line")
    args = p.parse_args(argv)
    if args.dask_every and not _dask_available():
        print("note: dask[distributed] is not installed: no Dask runs")
        args.dask_every = 0
    from _common import emit, table

    outcomes = []
    for seed in range(args.start, args.start + args.seeds):
        o = run_seed(seed, timeout=args.timeout_per_run, dask_every=args.dask_every,
                     keep_failed=args.keep)
        outcomes.append(o)
        kinds = " ".join(f"{k}x{n}" for k, n in sorted(o.plan.kinds.items()))
        verdict = "ok" if o.ok else "; ".join(o.findings.problems())
        print(f"seed {seed:4d} {o.plan.describe():28s} {o.plan.n_tasks:3d} tasks "
              f"exit {o.rc!s:4s} {o.seconds:5.1f} s  {verdict}\n           kinds: {kinds}",
              flush=True)
        if o.findings.hang:
            print(f"           threads at the hang: {'; '.join(o.findings.stuck_at) or '-'}")
            print(f"           store at the hang: {json.dumps(o.store_at_hang)}")
        if o.workdir:
            print(f"           kept: {o.workdir}")
    totals = summarize(outcomes)
    print()
    print(table(["measure", "value"], [(k, v) for k, v in totals.items() if k != "classes"]))
    print()
    print(table(["final class of failed tasks", "tasks"],
                sorted(totals["classes"]["final"].items())))
    print()
    print(table(["class of failed attempts", "attempts"],
                sorted(totals["classes"]["attempts"].items())))
    if args.json:
        emit("chaos", args, {"totals": totals, "runs": [_as_json(o) for o in outcomes]})
    bad = [o for o in outcomes if not o.ok]
    return 1 if bad else 0


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    final: Counter[str] = Counter()
    attempts: Counter[str] = Counter()
    for o in outcomes:
        final.update(o.findings.final_classes)
        attempts.update(o.findings.attempt_classes)
    return {
        "runs": len(outcomes),
        "runs_ok": sum(o.ok for o in outcomes),
        "dask_runs": sum(o.plan.executor == "dask" for o in outcomes),
        "watchdog_runs": sum(o.plan.isolation == "watchdog" for o in outcomes),
        "tasks": sum(sum(o.findings.states.values()) for o in outcomes),
        "hangs": sum(o.findings.hang for o in outcomes),
        "bad_exits": sum(bool(o.findings.exit) for o in outcomes),
        "rows_lost": sum(len(o.findings.rows_lost) for o in outcomes),
        "rows_duplicated": sum(len(o.findings.rows_duplicated) for o in outcomes),
        "rows_extra": sum(len(o.findings.rows_extra) for o in outcomes),
        "rows_excused_blob_deleted": sum(len(o.findings.rows_excused) for o in outcomes),
        "unclassified": sum(len(o.findings.unclassified) for o in outcomes),
        "mismatches": sum(len(o.findings.mismatch) for o in outcomes),
        "leftover_cgroups": sum(len(o.findings.leftover_cgroups) for o in outcomes),
        "leftover_processes": sum(len(o.findings.leftover_processes) for o in outcomes),
        "seconds": round(sum(o.seconds for o in outcomes), 1),
        "classes": {"final": dict(final), "attempts": dict(attempts)},
    }


def _as_json(o: Outcome) -> dict[str, Any]:
    return {
        "seed": o.plan.seed,
        "plan": asdict(o.plan),
        "exit": o.rc,
        "seconds": round(o.seconds, 2),
        "problems": o.findings.problems(),
        "findings": asdict(o.findings),
        "store_at_hang": o.store_at_hang,
        "workdir": o.workdir,
    }


if __name__ == "__main__":
    sys.exit(main())
