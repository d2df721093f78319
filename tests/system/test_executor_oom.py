"""Real kernel, real cgroup: one of 20 calls of oomguard.Executor allocates past its
400 MiB worker limit and is OOM-killed; only its future fails, with the class and the
kernel's line, and the executor runs more work after."""

from __future__ import annotations

import pytest

import oomguard
from oomguard.examples import allocate

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]


def test_one_call_past_the_limit_fails_alone(require_cgroup: None) -> None:
    with oomguard.Executor(max_workers=2, worker_memory="400MiB") as ex:
        futures = [ex.submit(allocate, 1024 if i == 5 else 8) for i in range(20)]
        for i, future in enumerate(futures):
            if i == 5:
                err = future.exception(240)
                assert isinstance(err, oomguard.CallMemoryError)
                assert isinstance(err, MemoryError)
                assert isinstance(err, oomguard.OomguardError)
                assert err.failure_class == "needs_more_memory"
                assert err.kernel_line is not None
                assert "Killed process" in err.kernel_line
                assert err.attempts[-1]["failure_class"] == "oom_cgroup"
                assert err.attempts[-1]["limit_bytes"] == 400 * 1024**2
            else:
                assert future.result(240)["allocated_mib"] == 8
        # More work runs after it. Calls of the same memory key (by default the function's
        # qualified name) are refused until the limit grows, as the Runner's tasks are.
        assert [f.result(120) for f in [ex.submit(sum, [i, 1]) for i in range(4)]] == [1, 2, 3, 4]
        late = ex.submit(allocate, 4).exception(120)
        assert isinstance(late, oomguard.CallMemoryError)


def test_joblib_raises_the_memory_error_after_the_retries(require_cgroup: None) -> None:
    import joblib

    import oomguard.joblib  # registers the backend

    config = joblib.parallel_config(backend="oomguard", n_jobs=2, worker_memory="300MiB")
    with pytest.raises(oomguard.CallMemoryError) as info, config:
        joblib.Parallel()(joblib.delayed(allocate)(1024 if i == 3 else 4) for i in range(8))
    assert isinstance(info.value, MemoryError)
    assert info.value.kernel_line is not None
    assert "Killed process" in info.value.kernel_line
