"""Admission that learns from the first kill, on a real cgroup and the CLI in a subprocess.

The mixed sweep of the admission issue: 30 tasks of 40 MiB, 6 of 700 MiB and 2 of 3 GiB,
all declared at 64 MiB, keyed by size, 4 workers in a 1.5 GiB budget. Everything that fits
succeeds with at most 2 OOM kills per memory key, no attempt ever runs at a limit that
already killed its key, and the 3 GiB tasks end needs_more_memory, the second one without
running.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from oomguard.store.records import AttemptRecord, AttemptSpan
from oomguard.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from conftest import RunCli

pytestmark = [pytest.mark.system, pytest.mark.timeout(400)]
MIB = 1024**2
OWN_LIMIT = ("oom_cgroup", "oom_watchdog", "memory_error")


def _key(a: AttemptSpan) -> str:
    assert a.memory_key is not None, a  # the sweep keys every task by its size
    return a.memory_key


def _limit(a: AttemptSpan) -> int:
    assert a.limit_bytes is not None, a  # every attempt ran under a limit
    return a.limit_bytes


def _started(a: AttemptSpan) -> float:
    assert a.started_at is not None, a  # every attempt started
    return a.started_at


def _ended(a: AttemptSpan | AttemptRecord) -> float:
    assert a.ended_at is not None, a  # every attempt ended
    return a.ended_at


def test_mixed_sweep_learns_from_the_first_kill(
    tmp_path: Path, cli: RunCli, require_cgroup: None
) -> None:
    params = (
        [{"mib": 40, "hold": 0.05}] * 30 + [{"mib": 700, "hold": 0.3}] * 6 + [{"mib": 3072}] * 2
    )
    random.Random(7).shuffle(params)
    params_file = tmp_path / "params.jsonl"
    params_file.write_text("".join(json.dumps(p) + "\n" for p in params))
    store_path = tmp_path / "s.sqlite"
    proc = cli(
        "run",
        "oomguard.examples:allocate",
        "--params",
        str(params_file),
        "--store",
        str(store_path),
        "--workers",
        "4",
        "--memory-budget",
        "1.5GiB",
        "--task-memory",
        "64MiB",
        "--memory-key",
        "mib",
        timeout=360,
    )
    # The job ends by itself: with failures, `run` exits 1.
    assert proc.returncode == 1, proc.stderr[-3000:]

    with SqliteStore(str(store_path)) as store:
        job_id = store.resolve_job(None)
        attempts = list(store.queries.all_attempts(job_id))
        failed = store.queries.failed_tasks(job_id, limit=100)
        counts = store.queries.counts(job_id)
        knowledge = store.estimate_rows()
    assert counts.get("succeeded") == 36, (counts, failed)
    assert [f.failure_class for f in failed] == ["needs_more_memory"] * 2

    by_key: dict[str, list[AttemptSpan]] = {}
    for a in attempts:
        by_key.setdefault(_key(a), []).append(a)
    kills = {
        k: [a for a in v if (a.failure_class or "").startswith(("oom_", "memory"))]
        for k, v in by_key.items()
    }
    assert all(len(v) <= 2 for v in kills.values()), {k: len(v) for k, v in kills.items()}
    assert sum(len(v) for v in kills.values()) <= 4
    assert not [a for k, v in kills.items() if k.endswith("mib=40") for a in v]

    # No attempt starts at a limit that already OOM-killed an attempt of its key.
    for key, killed in kills.items():
        for kill in killed:
            later = [a for a in by_key[key] if _started(a) >= _ended(kill)]
            assert all(_limit(a) > _limit(kill) for a in later), (key, kill, later)

    # The 3 GiB key was proved unfit at the cap; the task that had not run yet never ran.
    big_key = next(k for k in knowledge if k.endswith("mib=3072"))
    assert knowledge[big_key].unfit_cap == int(1.5 * 1024 * MIB)
    big_kills = kills[big_key]
    assert big_kills[-1].limit_bytes == int(1.5 * 1024 * MIB)
    assert big_kills[-1].failure_class in OWN_LIMIT
    # Its two tasks ran twice in all: the probe at the declared limit and one attempt at
    # the cap; the task that was not the one killed at the cap then failed without running.
    assert len(by_key[big_key]) == 2
    proof = f"attempt {big_kills[-1].attempt_id}"
    refused = [f for f in failed if f.task_id != big_kills[-1].task_id]
    assert len(refused) == 1 and refused[0].error is not None and proof in refused[0].error
    assert _ended(refused[0].attempts[-1]) <= _ended(big_kills[-1])

    # The 700 MiB key: one kill at its declared limit, then learned in one step at the cap.
    mid_key = next(k for k in knowledge if k.endswith("mib=700"))
    assert len(kills[mid_key]) <= 1
    assert knowledge[mid_key].samples == 6
    assert knowledge[mid_key].killed_at in (
        0,
        kills[mid_key][0].limit_bytes if kills[mid_key] else 0,
    )

    # A later job of the unfit key at the same cap fails without running at all.
    again = tmp_path / "again.jsonl"
    again.write_text(json.dumps({"mib": 3072}) + "\n")
    proc = cli(
        "run",
        "oomguard.examples:allocate",
        "--params",
        str(again),
        "--store",
        str(store_path),
        "--workers",
        "1",
        "--memory-budget",
        "1.5GiB",
        "--memory-key",
        "mib",
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    with SqliteStore(str(store_path)) as store:
        job2 = store.resolve_job(None)
        (failure,) = store.queries.failed_tasks(job2, limit=10)
        assert failure.failure_class == "needs_more_memory"
        assert failure.attempt_count == 0
        assert failure.error is not None
        assert "needs more memory" in failure.error


def test_a_probe_with_a_generous_sibling_is_killed_at_most_twice(
    tmp_path: Path, require_cgroup: None
) -> None:
    """Two tasks of a new key that needs more than the cap, 2 workers, an ample budget:
    one starts as the probe (at its declared 64 MiB), the other beside it as a generous
    sibling (4 times the probe's limit, below the cap). The probe's kill stops the sibling
    (requeued, not counted), so the key's second and last kill is its cap probe's."""
    import oomguard

    cap = 1536 * MIB
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"),
        workers=2,
        memory_budget=cap,
        task_memory="64MiB",
        memory_key="mib",
    ) as runner:
        job = runner.sweep(
            "fixtures.tasks:alloc_slowly", [{"mib": 2048, "step_mib": 64, "pause": 0.15}] * 2
        )
        status = job.wait(timeout=180, progress=False)
        attempts = list(runner.store.queries.all_attempts(job.id))
        failed = runner.store.queries.failed_tasks(job.id, limit=10)
    assert status["counts"].get("failed") == 2, status
    assert [f.failure_class for f in failed] == ["needs_more_memory"] * 2
    limits = sorted(_limit(a) for a in attempts)
    kills = [a for a in attempts if (a.failure_class or "").startswith("oom_")]
    assert len(kills) <= 2, [(a.limit_bytes, a.failure_class) for a in attempts]
    assert max(_limit(a) for a in kills) == cap  # the last kill is at the cap
    # The sibling really ran beside the probe (else this test proves nothing) and was
    # stopped, not counted: skipped, with the reason.
    siblings = [a for a in attempts if a.limit_bytes == 4 * 128 * MIB]
    assert siblings, limits
    assert all(a.state == "skipped" for a in siblings), siblings
