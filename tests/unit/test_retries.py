"""The retry policy, without processes."""

from __future__ import annotations

from typing import Any

from oomguard.jobs.model import FailureClass
from oomguard.scheduler.retries import Decision, RetryPolicy, decide

MIB = 1024 * 1024
GIB = 1024 * MIB
POLICY = RetryPolicy(death_retries=3, backoff=0.5, backoff_max=4.0)


def _decide(fc: FailureClass, **kw: object) -> Decision:
    args: dict[str, Any] = dict(
        policy=POLICY,
        now=100.0,
        attempt=1,
        oom_attempts=0,
        retries=0,
        oom_retries=3,
        limit=640 * MIB,
        peak=640 * MIB,
        memory=None,
        cap=2 * GIB,
    )
    args.update(kw)
    return decide(fc, **args)


def test_oom_kill_is_retried_at_once_with_double_the_memory() -> None:
    d = _decide(FailureClass.OOM_CGROUP, oom_attempts=1)
    assert d.retry_at == 100.0 and d.memory == 1280 * MIB


def test_escalation_stops_at_the_cap() -> None:
    d = _decide(FailureClass.OOM_CGROUP, oom_attempts=2, limit=1600 * MIB, peak=1600 * MIB)
    assert d.memory == 2 * GIB


def test_killed_at_the_cap_needs_more_memory() -> None:
    d = _decide(FailureClass.OOM_WATCHDOG, oom_attempts=3, limit=2 * GIB, peak=2 * GIB)
    assert d.retry_at is None
    assert d.final_class == FailureClass.NEEDS_MORE_MEMORY
    assert "2GiB" in d.message and "3 OOM kill(s)" in d.message


def test_oom_retry_limit_bounds_escalation() -> None:
    d = _decide(FailureClass.OOM_CGROUP, oom_attempts=4, oom_retries=3)
    assert d.retry_at is None and d.final_class == FailureClass.NEEDS_MORE_MEMORY


def test_lost_is_always_retried() -> None:
    assert _decide(FailureClass.LOST, attempt=9).retry_at == 100.0


def test_errors_use_retries_with_exponential_backoff() -> None:
    assert _decide(FailureClass.ERROR).retry_at is None  # retries=0
    assert _decide(FailureClass.ERROR, retries=2, attempt=1).retry_at == 100.5
    assert _decide(FailureClass.ERROR, retries=2, attempt=2).retry_at == 101.0
    assert _decide(FailureClass.ERROR, retries=2, attempt=3).retry_at is None
    assert _decide(FailureClass.TIMEOUT, retries=9, attempt=8).retry_at == 104.0  # capped


def test_worker_deaths_get_death_retries() -> None:
    assert _decide(FailureClass.KILLED, attempt=3).retry_at is not None
    assert _decide(FailureClass.KILLED, attempt=4).retry_at is None
    assert _decide(FailureClass.CRASHED, attempt=1).final_class == FailureClass.CRASHED
