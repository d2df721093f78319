"""When a job is stopped because its task cannot be loaded (scheduler/broken.py)."""

from __future__ import annotations

from oomguard.jobs.model import FailureClass
from oomguard.scheduler.broken import STOP_AFTER, BrokenJobs

ERR = FailureClass.ERROR
GUARD = "MainGuardError: oomguard.Runner was started while ... __main__ ..."
MISSING = "TaskReferenceError: no module named 'nope' (in 'nope:f')"


def test_the_first_attempts_failing_alike_stop_the_job_once() -> None:
    broken = BrokenJobs()
    assert [broken.failed("j", ERR, GUARD) for _ in range(STOP_AFTER - 1)] == [None, None]
    cause = broken.failed("j", ERR, GUARD)
    assert cause is not None and cause.startswith("stopped after its first 3 attempts")
    assert GUARD in cause
    assert broken.take() == {"j": cause}
    assert broken.take() == {}  # told once
    assert broken.failed("j", ERR, GUARD) == cause  # a late one is final too
    broken.forget({"j"})
    assert broken.failed("j", ERR, GUARD) is None  # a finished job starts afresh


def test_a_success_or_another_failure_first_means_the_task_loads() -> None:
    broken = BrokenJobs()
    broken.succeeded("a")
    assert all(broken.failed("a", ERR, MISSING) is None for _ in range(5))
    assert broken.failed("b", ERR, "RuntimeError: the task's own failure") is None
    assert all(broken.failed("b", ERR, MISSING) is None for _ in range(5))
    assert broken.failed("c", FailureClass.OOM_CGROUP, None) is None
    assert all(broken.failed("c", ERR, MISSING) is None for _ in range(5))
    assert broken.take() == {}


def test_different_reference_errors_are_not_one_broken_reference() -> None:
    broken = BrokenJobs()
    assert broken.failed("j", ERR, MISSING) is None
    assert broken.failed("j", ERR, GUARD) is None
    assert all(broken.failed("j", ERR, GUARD) is None for _ in range(5))
    # Jobs are counted apart.
    assert [broken.failed("k", ERR, MISSING) for _ in range(3)][-1] is not None
