"""The bundled example sweep: ``python -m oomguard.demo`` (``make demo``).

An agent-based simulation sweep where memory grows with ``n_agents``: most parameter
sets are small and run packed side by side; the largest outgrow their first estimate,
are killed by the kernel in their own memory cgroup (or by the watchdog where the machine
has no cgroups), are shown with the kernel's own line, and are retried with more memory
until they succeed. Results land in Parquet under ``demo-out/``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import oomguard
from oomguard.cli.report import render, wrap
from oomguard.units import format_size


def _key_order(key: str) -> tuple[str, float, str]:
    """Estimates in the order of their key's value: ``n_agents=80`` before ``=900``."""
    fn, _, which = key.partition("|")
    name, _, value = which.partition("=")
    try:
        return (f"{fn}|{name}", float(value), "")
    except ValueError:
        return (f"{fn}|{name}", float("inf"), value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", help="output directory")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep an earlier demo's store")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = [20, 40, 80, 900]
    params = [
        {"n_agents": n, "steps": 3, "mib_per_agent": 1.0, "seed": i}
        for i in range(6)
        for n in sizes
    ]
    with oomguard.Runner(
        store=str(out / "demo.sqlite"), workers=args.workers, memory_key="n_agents"
    ) as runner:
        view = runner.view()
        print(f"isolation: {view.isolation} ({view.isolation_reason})")
        print(f"memory budget: {format_size(view.budget)}; workers: {runner.config.workers}")
        print(
            f"sweep: {len(params)} parameter sets x 2 replicates + aggregations; each task "
            f"allocates n_agents MiB ({', '.join(map(str, sizes))}) on top of its worker "
            "process's own memory"
        )
        job = runner.sweep(
            "oomguard.examples:simulate",
            params,
            replicates=2,
            aggregate="oomguard.examples:mean_of",
            out=str(out / "results"),
            name="demo",
        )
        status = job.wait()
        attempts = list(runner.store.queries.all_attempts(job.id))
        kills = [a for a in attempts if (a.failure_class or "").startswith("oom_")]
        print()
        print(
            f"{len(kills)} {'attempt was' if len(kills) == 1 else 'attempts were'} "
            "OOM-killed and retried with more memory:"
        )
        for a in kills:
            (ev,) = [
                x.evidence if isinstance(x.evidence, dict) else {}
                for x in runner.store.queries.attempts(a.task_id)
                if x.attempt_id == a.attempt_id
            ]
            lines = ev.get("kernel_lines")
            kernel = [
                str(line)
                for line in (lines if isinstance(lines, list) else [])
                if "Killed process" in str(line)
            ]
            print(
                f"  task {a.task_id} ({(a.memory_key or '').split('|')[-1]}): "
                f"{a.failure_class} at a limit of {format_size(a.limit_bytes)}"
            )
            if kernel:  # the kernel's whole line, wrapped
                print("\n".join(wrap(kernel[-1].strip(), "    ", "kernel: ")))
            elif ev.get("killed_by_oomguard"):
                rss = ev.get("rss_bytes")
                print(
                    f"    watchdog: RSS {format_size(rss if isinstance(rss, int) else None)} "
                    "over the limit"
                )
            retried = [
                x for x in runner.store.queries.attempts(a.task_id) if x.attempt_id > a.attempt_id
            ]
            if retried:
                last = retried[-1]
                print(
                    f"    retried with a limit of {format_size(last.limit_bytes)}: "
                    f"{last.state} (peak {format_size(last.peak_bytes)})"
                )
        print()
        print("learned estimates (the estimate: the peaks seen, plus a margin from their spread):")
        rows = sorted(runner.store.estimates().items(), key=lambda kv: _key_order(kv[0]))
        for key, (est, peak, samples) in rows:
            fn, _, which = key.partition("|")
            label = f"{fn.rsplit(':', 1)[-1]} {which}"
            print(
                f"  {label:>22}: {format_size(est)} (peak {format_size(peak)}, "
                f"{samples} {'sample' if samples == 1 else 'samples'})"
            )
        print()
        for line in render(status, job.failures(200)):
            print(line)
        store = out / "demo.sqlite"
        print(f"  Parquet: {out / 'results' / 'tasks'}/, {out / 'results' / 'aggregates'}/")
        print("next: . .venv/bin/activate  (puts oomguard on PATH), then")
        print(f"      oomguard ui --store {store}  (the dashboard: http://127.0.0.1:8766/ui/)")
        print(f"      oomguard status --store {store} --json  (every attempt's evidence)")
    return 0 if status.counts.get("failed", 0) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
