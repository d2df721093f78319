"""What a worker process inherits: the caller's environment, less ``env_drop``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from oomguard.executors.dask.remote.host_pool import CHILD_ENV_DROP
from oomguard.worker.pool import PoolConfig, WorkerPool


def env_of(drop: tuple[str, ...]) -> dict[str, str] | None:
    config = PoolConfig(workers=0, isolation=None, env_drop=drop)  # type: ignore[arg-type]
    fake: Any = SimpleNamespace(config=config)
    return WorkerPool._env(fake, None)


def test_the_dask_nannys_malloc_trim_threshold_is_not_inherited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    monkeypatch.setenv("OOMGUARD_TEST_KEPT", "1")
    assert env_of(()) is None  # everything inherited
    env = env_of(CHILD_ENV_DROP)
    assert env is not None
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    assert env["OOMGUARD_TEST_KEPT"] == "1"
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    assert env_of(CHILD_ENV_DROP) is None  # nothing to drop
