"""Memory-aware admission on a real cgroup: learn, escalate, pack, never exceed the budget."""

from __future__ import annotations

from pathlib import Path

import pytest

import oomguard
from oomguard.store.records import AttemptSpan

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]
MIB = 1024**2
GIB = 1024**3


def _max_concurrent_admitted(attempts: list[AttemptSpan]) -> int:
    points = []
    for a in attempts:
        points.append((a.started_at, a.admitted_bytes or 0))
        points.append((a.ended_at or a.started_at, -(a.admitted_bytes or 0)))
    points.sort(key=lambda p: (p[0], p[1]))  # ends before starts at the same instant
    total = peak = 0
    for _, delta in points:
        total += delta
        peak = max(peak, total)
    return peak


def _key(a: AttemptSpan) -> str:
    assert a.memory_key is not None, a  # the sweep keys every task by its size
    return a.memory_key


def _limit(a: AttemptSpan) -> int:
    assert a.limit_bytes is not None, a  # every attempt ran under a limit
    return a.limit_bytes


def test_mixed_sweep_learns_estimates_and_fits_the_budget(
    tmp_path: Path, require_cgroup: None
) -> None:
    params = [
        {"mib": 1200 if i % 6 == 5 else 100, "hold": 0.3 if i % 6 == 5 else 0.1} for i in range(60)
    ]
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"), workers=4, memory_budget="2GiB", memory_key="mib"
    ) as runner:
        job = runner.sweep("oomguard.examples:allocate", params)
        status = job.wait(timeout=240, progress=False)
        assert status["counts"]["succeeded"] == 60, job.failures()
        attempts = list(runner.store.queries.all_attempts(job.id))
        assert runner.scheduler is not None
        assert runner.scheduler.admission.high_water <= 2 * GIB
    big = [a for a in attempts if _key(a).endswith("mib=1200")]
    oom_big = [a for a in big if (a.failure_class or "").startswith("oom_")]
    assert len(oom_big) <= 1, "the big key was OOM-killed again after its estimate was learned"
    small_oom = [a for a in attempts if _key(a).endswith("mib=100") and a.failure_class]
    assert not small_oom
    assert _max_concurrent_admitted(attempts) <= 2 * GIB
    # After the first (probe) attempt of the small key, small tasks ran packed.
    small = [a for a in attempts if _key(a).endswith("mib=100")]
    assert max(_limit(a) for a in small[1:]) < 256 * MIB


def test_task_beyond_budget_ends_needs_more_memory(tmp_path: Path, require_cgroup: None) -> None:
    params = [{"mib": 4096}] + [{"mib": 20} for _ in range(8)]
    with oomguard.Runner(
        store=str(tmp_path / "s.sqlite"), workers=2, memory_budget="2GiB", memory_key="mib"
    ) as runner:
        job = runner.sweep("oomguard.examples:allocate", params)
        status = job.wait(timeout=240, progress=False)
        assert status["counts"]["succeeded"] == 8
        (failure,) = job.failures()
        assert failure["failure_class"] == "needs_more_memory"
        kills = [a for a in failure["attempts"] if a["failure_class"].startswith("oom_")]
        assert 1 <= len(kills) <= 3
        assert "needs more memory" in failure["error"]
        assert kills[-1]["limit_bytes"] == 2 * GIB
