"""The jobs of the chaos benchmark: one seeded random job per seed, and what each task of
it must end with.

:func:`make_plan` turns a seed into a :class:`Plan`: 5-30 tasks of random kinds in random
order (the kinds of ``chaos_tasks.py``), with or without ``--out``, with or without
``--replicates 2 --aggregate``, 2 local workers with ``--worker-memory 256MiB``, about one
run in four with ``--isolation watchdog``, or on Dask (``--dask-local 2``) with only the kinds
a Dask worker survives. The same seed always makes the same plan.

:data:`EXPECTED` says, per kind, the final state, the classes its failed attempts may have and
the final classes it may have, as the README's "Failure classes" describes them.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TASKS_FILE = HERE / "chaos_tasks.py"
TASK_REF = f"{TASKS_FILE}:chaos"
AGG_REF = f"{TASKS_FILE}:aggregate"
WORKER_MEMORY = "256MiB"
OOM_MIB = 600
LARGE_MIB = 2.0
TASK_TIMEOUT_S = 2.0


#: kind -> (final state, classes its failed attempts may have, final classes it may have);
#: ``oom_*`` and ``{oom}`` stand for the run's OOM class: ``oom_cgroup`` with memory
#: cgroups, ``oom_watchdog`` with the RSS watchdog
EXPECTED: dict[str, tuple[str, frozenset[str], frozenset[str]]] = {
    "succeed": ("succeeded", frozenset(), frozenset()),
    "error": ("failed", frozenset({"error"}), frozenset({"error"})),
    # OOM classes and memory_error are retried with more memory up to the cap, then fail
    # for good as needs_more_memory (README, "Failure classes").
    "memory_error": ("failed", frozenset({"memory_error"}), frozenset({"needs_more_memory"})),
    "oom": ("failed", frozenset({"{oom}"}), frozenset({"needs_more_memory"})),
    "oom_child": ("failed", frozenset({"{oom}"}), frozenset({"needs_more_memory"})),
    "timeout": ("failed", frozenset({"timeout"}), frozenset({"timeout"})),
    "segv": ("failed", frozenset({"crashed"}), frozenset({"crashed"})),
    "abort": ("failed", frozenset({"crashed"}), frozenset({"crashed"})),
    # sys.exit raises SystemExit in the task: the worker catches it like any exception.
    "exit": ("failed", frozenset({"error"}), frozenset({"error"})),
    "os_exit": ("failed", frozenset({"crashed"}), frozenset({"crashed"})),
    "unpicklable": ("failed", frozenset({"error"}), frozenset({"error"})),
    "surrogate_result": ("succeeded", frozenset(), frozenset()),
    "surrogate_error": ("failed", frozenset({"error"}), frozenset({"error"})),
    "large": ("succeeded", frozenset(), frozenset()),
    "lose_blobs": ("succeeded", frozenset(), frozenset()),
}

#: relative weights of the kinds in a local job (``lose_blobs`` is added on its own)
LOCAL_WEIGHTS = {
    "succeed": 8, "error": 2, "memory_error": 1, "oom": 2, "oom_child": 1, "timeout": 1,
    "segv": 1, "abort": 1, "exit": 1, "os_exit": 1, "unpicklable": 1,
    "surrogate_result": 1, "surrogate_error": 1, "large": 2,
}
#: on Dask only kinds a Dask worker process survives (a dead or restarted worker costs a
#: nanny restart of seconds, and a local cluster has no per-task cgroup)
DASK_WEIGHTS = {
    "succeed": 8, "error": 2, "memory_error": 1, "exit": 1, "unpicklable": 1,
    "surrogate_result": 1, "surrogate_error": 1, "large": 2,
}
MAX_TIMEOUT_KINDS = 3


@dataclass
class Plan:
    """One seeded job: its parameter lines and the options of its ``oomguard run``."""

    seed: int
    executor: str  # "local" or "dask"
    isolation: str | None  # "cgroup", "watchdog"; None on Dask
    out: bool
    replicates: int | None
    aggregate: bool
    timeout: float | None
    params: list[dict[str, Any]]

    @property
    def kinds(self) -> Counter[str]:
        return Counter(p["kind"] for p in self.params)

    @property
    def n_tasks(self) -> int:
        per = (self.replicates or 1) + (1 if self.aggregate else 0)
        return len(self.params) * per

    @property
    def oom_class(self) -> str:
        return "oom_watchdog" if self.isolation == "watchdog" else "oom_cgroup"

    def describe(self) -> str:
        where = "dask" if self.executor == "dask" else self.isolation
        opts = [str(where)]
        if self.out:
            opts.append("out")
        if self.aggregate:
            opts.append(f"x{self.replicates}+agg")
        if self.timeout:
            opts.append(f"timeout={self.timeout:g}")
        return " ".join(opts)

    def argv(self, workdir: Path) -> list[str]:
        args = [
            sys.executable, "-X", "faulthandler", "-m", "oomguard.cli.main", "run", TASK_REF,
            "--params", str(workdir / "p.jsonl"), "--store", str(workdir / "s.db"),
            "--worker-memory", WORKER_MEMORY, "--json",
        ]
        if self.executor == "dask":
            args += ["--dask-local", "2"]
        else:
            args += ["--workers", "2", "--isolation", str(self.isolation)]
        if self.out:
            args += ["--out", str(workdir / "out")]
        if self.replicates:
            args += ["--replicates", str(self.replicates)]
        if self.aggregate:
            args += ["--aggregate", AGG_REF]
        if self.timeout:
            args += ["--timeout", f"{self.timeout:g}"]
        return args

    def write_params(self, workdir: Path) -> None:
        blobs = str(workdir / "s.db.blobs")
        with open(workdir / "p.jsonl", "w") as fh:
            for p in self.params:
                line = dict(p, blobs=blobs) if p["kind"] == "lose_blobs" else p
                fh.write(json.dumps(line) + "\n")


def make_plan(seed: int, *, dask_every: int = 0, dask: bool | None = None) -> Plan:
    """The job of ``seed``: the same seed always makes the same plan."""
    rng = random.Random(seed)
    if dask is None:
        dask = dask_every > 0 and seed % dask_every == dask_every - 1
    executor = "dask" if dask else "local"
    watchdog = rng.random() < 0.25
    isolation = None if dask else ("watchdog" if watchdog else "cgroup")
    out = rng.random() < 0.7
    grouped = rng.random() < 0.4
    replicates = 2 if grouped else None
    # 5-30 tasks in all, aggregations included.
    lines = rng.randint(2, 10) if grouped else rng.randint(5, 30)
    weights = DASK_WEIGHTS if dask else LOCAL_WEIGHTS
    kinds = rng.choices(list(weights), weights=list(weights.values()), k=lines)
    # Each timeout costs its seconds: a few per job are enough.
    while kinds.count("timeout") > MAX_TIMEOUT_KINDS:
        kinds[kinds.index("timeout")] = "succeed"
    if not dask and "large" in kinds and rng.random() < 0.25:
        # Last, after a pause: the large results before it are stored by then, most
        # likely not yet in a Parquet part nor read by their aggregation.
        kinds[-1] = "lose_blobs"
    params: list[dict[str, Any]] = []
    for i, kind in enumerate(kinds):
        p: dict[str, Any] = {"kind": kind, "i": i}
        if kind in ("oom", "oom_child"):
            p["mib"] = OOM_MIB
        elif kind == "large":
            p["mib"] = LARGE_MIB
        elif kind == "timeout":
            p["seconds"] = 60.0
        elif kind == "lose_blobs":
            p["delay"] = 0.5
        if grouped and rng.random() < 0.1:
            p["agg"] = "error"
        params.append(p)
    timeout = TASK_TIMEOUT_S if "timeout" in kinds else None
    return Plan(seed, executor, isolation, out, replicates, grouped, timeout, params)
