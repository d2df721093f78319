"""Retention on a real store: which jobs are old enough to forget, what a step deletes,
the lock rows finished tasks leave, and ``oomguard gc --vacuum`` (the CLI in a
subprocess) giving the space back."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import oomguard
from oomguard.api.retention import STEP_JOBS, Retention, interval_for
from oomguard.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from conftest import RunCli

pytestmark = pytest.mark.timeout(300)


def _finished_jobs(store: Path, n: int, tasks: int = 5) -> list[str]:
    ids = []
    with oomguard.Runner(store=str(store), workers=1) as runner:
        for i in range(n):
            job = runner.sweep("oomguard.examples:noop", [{"x": i}] * tasks, name=f"j{i}")
            job.wait(timeout=120, progress=False)
            ids.append(job.id)
    return ids


def test_a_step_forgets_finished_jobs_past_the_retention_only(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    ids = _finished_jobs(path, 3)
    store = SqliteStore(str(path))
    try:
        keep = Retention(3600.0)
        assert keep.step(store) == 0  # nothing is an hour old
        assert store.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 3
        # An open job (still accepting tasks) is never forgotten, however old.
        store.create_job("openjob", name="open", fn="oomguard.examples:noop", agg=None)
        later = time.time() + 7200
        assert store.retention.expired_jobs(later - 3600, 10) == ids
        retention = Retention(3600.0)
        assert retention.step(store, now=later) == 3
        assert retention.stats.jobs == 3 and retention.stats.tasks == 15
        counts = store.db.execute(
            "SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM tasks), "
            "(SELECT COUNT(*) FROM attempts), (SELECT COUNT(*) FROM results)"
        ).fetchone()
        assert tuple(counts) == (1, 0, 0, 0)
        # The forget events themselves go once they are older than the retention.
        assert retention.step(store, now=later + 7200) == 0
        assert retention.stats.events >= 3
        assert (
            store.db.execute(
                "SELECT COUNT(*) FROM events WHERE job_id IS NULL AND kind = 'job_forgotten'"
            ).fetchone()[0]
            == 0
        )
    finally:
        store.close()


def test_lock_rows_of_finished_tasks_are_released(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _finished_jobs(path, 1, tasks=2)
    store = SqliteStore(str(path))
    try:
        done = [r[0] for r in store.db.execute("SELECT id FROM tasks")]
        store.create_job("live", name="live", fn="oomguard.examples:noop", agg=None)
        with store.transaction() as db:
            db.execute(
                "INSERT INTO tasks (job_id, grp, kind, fn, state, updated_at) "
                "VALUES ('live', 0, 'task', 'oomguard.examples:noop', 'running', 0)"
            )
            live = db.execute("SELECT MAX(id) FROM tasks").fetchone()[0]
            db.execute(
                "INSERT INTO locks (key, attempt_id, task_id) VALUES ('a', 1, ?)", (done[0],)
            )
            db.execute("INSERT INTO locks (key, attempt_id, task_id) VALUES ('b', 2, ?)", (live,))
        assert store.retention.release_finished() == 1
        assert [r[0] for r in store.db.execute("SELECT key FROM locks")] == ["b"]
    finally:
        store.close()


def test_intervals_and_step_size() -> None:
    assert interval_for(1.0) == 1.0
    assert interval_for(7 * 86400) == 60.0
    assert interval_for(120.0) == 30.0
    assert STEP_JOBS >= 1


def test_gc_vacuum_compacts_the_store(tmp_path: Path, cli: RunCli) -> None:
    path = tmp_path / "s.sqlite"
    (job_id,) = _finished_jobs(path, 1, tasks=3000)
    res = cli("forget", job_id, "--store", str(path))
    assert res.returncode == 0, res.stderr
    res = cli("gc", "--store", str(path), "--vacuum", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["store_bytes"] < report["store_bytes_before"]
    assert path.stat().st_size == report["store_bytes"]
    res = cli("gc", "--store", str(path), "--vacuum")
    assert res.returncode == 0 and "store compacted:" in res.stdout, res.stderr


def test_the_retention_config_key(tmp_path: Path) -> None:
    from oomguard.config import load_config
    from oomguard.errors import ConfigError

    config = tmp_path / "oomguard.toml"
    config.write_text('retention = "7d"\n')
    assert load_config(config, env={}).retention == 7 * 86400
    assert load_config(config, env={"OOMGUARD_RETENTION": "90s"}).retention == 90
    assert load_config(config, env={}, retention=5.0).retention == 5.0
    config.write_text('retention = "soon"\n')
    with pytest.raises(ConfigError, match="invalid duration 'soon'"):
        load_config(config, env={})
    config.write_text("retention = 0\n")
    with pytest.raises(ConfigError, match="retention must be more than 0"):
        load_config(config, env={})
