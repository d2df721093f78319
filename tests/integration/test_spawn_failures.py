"""A worker that cannot be started (EMFILE, ENOMEM) is tried again with backoff; when none
can be started the scheduler stops with the reason instead of dying or spinning.

The scheduler, store and workers are real; only ``Popen`` is made to fail, the way the
kernel fails it when the process is out of file descriptors.
"""

from __future__ import annotations

import errno
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

import oomguard
from fixtures.polling import wait_for
from oomguard.errors import WorkerSpawnError
from oomguard.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(120)

REAL_POPEN = subprocess.Popen


class FailingPopen:
    """``subprocess.Popen`` that fails with EMFILE ``failures`` times (None: always)."""

    def __init__(self, failures: int | None) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.failures is None or self.calls <= self.failures:
            raise OSError(errno.EMFILE, "Too many open files")
        return REAL_POPEN(*args, **kwargs)


def test_workers_that_fail_to_start_are_retried_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="oomguard.executor")
    with oomguard.Runner(store=str(tmp_path / "s.db"), workers=2, max_tasks_per_worker=1) as runner:
        popen = FailingPopen(failures=3)
        monkeypatch.setattr("oomguard.worker.pool.subprocess.Popen", popen)
        job = runner.sweep("fixtures.tasks:echo", [{"value": i} for i in range(6)])
        status = job.wait(timeout=90, progress=False)
        assert status["counts"]["succeeded"] == 6
        assert runner.alive
    assert popen.calls > 3
    assert "cannot start a worker (1 in a row" in caplog.text
    assert "Too many open files" in caplog.text


def test_the_scheduler_stops_with_the_reason_when_no_worker_can_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = oomguard.Runner(store=str(tmp_path / "s.db"), workers=1, max_tasks_per_worker=1)
    runner.start()
    try:
        monkeypatch.setattr("oomguard.worker.pool.subprocess.Popen", FailingPopen(failures=None))
        job = runner.sweep("fixtures.tasks:echo", [{"value": i} for i in range(3)])
        with pytest.raises(WorkerSpawnError, match="no worker could be started") as info:
            job.wait(timeout=90, progress=False)
        assert "Too many open files" in str(info.value)
        wait_for(lambda: not runner.alive)  # it stops cleanly after raising
    finally:
        runner.close()
    with SqliteStore(tmp_path / "s.db") as store:
        counts = store.queries.counts(job.id)
        stopped = store.db.execute("SELECT stopped_at FROM schedulers").fetchall()
    # The first task ran on the worker that did start; the others wait for a scheduler.
    assert counts["succeeded"] == 1 and counts["ready"] == 2
    assert stopped and all(s[0] is not None for s in stopped)
