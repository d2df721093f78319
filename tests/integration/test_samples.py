"""The dashboard's time series: recorded by a real scheduler with real workers, bounded
(retention, thinning), deleted by forget, read through a read-only store beside a live
writer; a sampler that cannot write never stops the loop."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

import oomguard
from fixtures.polling import wait_for
from oomguard.errors import StoreError, StoreUnavailable
from oomguard.scheduler.samples import Sampler, snapshot
from oomguard.store.samples import Sample
from oomguard.store.sqlite import SqliteStore


def _sample(
    job_id: str, ts: float, admitted: int = 100, workers: dict[str, int] | None = None
) -> Sample:
    return Sample(job_id, ts, 1000, admitted, admitted, 1, workers or {"w1": 5})


def test_a_running_job_is_sampled_with_its_workers_rss_and_forget_deletes_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite"
    with oomguard.Runner(store=str(path), workers=2, isolation="watchdog") as runner:
        job = runner.sweep("oomguard.examples:allocate", [{"mib": 40, "hold": 0.5}] * 8)
        job.wait(timeout=120, progress=False)
        # The loop hands a snapshot over about once a second; the writer may lag a little.
        store = runner.store
        assert wait_for(lambda: store.samples.count(job.id) >= 2, timeout=30)
        series = store.samples.series(job.id)
        assert [s.ts for s in series] == sorted(s.ts for s in series)
        assert runner.scheduler is not None
        assert all(s.budget_bytes == runner.scheduler.budget for s in series)
        busy = [s for s in series if s.running]
        assert busy, series
        # Each attempt was admitted some memory; the workers' RSS was read from /proc.
        assert all(
            s.job_admitted_bytes > 0 and s.admitted_bytes >= s.job_admitted_bytes for s in busy
        )
        assert {"w1", "w2"} <= {name for s in series for name in s.workers}
        assert max(rss for s in series for rss in s.workers.values()) > 10 * 1024**2
        ends = store.samples.throughput(job.id)
        assert sum(b.succeeded for b in ends) == 8
        assert ends[-1].done == 8
    with SqliteStore(path) as store:
        store.admin.forget_job(job.id)
        assert store.samples.count(job.id) == 0
        assert store.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0


def test_retention_and_thinning_bound_the_series(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.sqlite") as store:
        now = time.time()
        store.samples.record([_sample("old", now - 1000 + i) for i in range(10)])
        store.samples.record([_sample("long", now - 500 + i) for i in range(100)])
        store.samples.record([_sample("short", now - 5 + i) for i in range(5)])
        # Only the jobs named are thinned (those sampled lately); retention is for all.
        assert store.samples.prune(older_than=now - 2000, max_per_job=40, jobs=["short"]) == 0
        deleted = store.samples.prune(now - 600, max_per_job=40, jobs=["long", "short"])
        assert store.samples.count("old") == 0
        assert store.samples.count("short") == 5
        # The long job's older half is thinned to every other row; its span is kept.
        assert store.samples.count("long") == 75
        assert deleted == 10 + 25
        kept = store.samples.series("long", max_points=1000)
        assert kept[0].ts == pytest.approx(now - 500)
        assert kept[-1].ts == pytest.approx(now - 401)
        # Reading thins evenly to about max_points, keeping the first and the last.
        few = store.samples.series("long", max_points=10)
        assert 10 <= len(few) <= 12
        assert few[0].ts == kept[0].ts and few[-1].ts == kept[-1].ts


def test_a_read_only_store_reads_beside_a_writer_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    writer = SqliteStore(path)
    writer.samples.record([_sample("j", 1.0)])
    reader = SqliteStore(path, readonly=True)
    try:
        assert reader.samples.count("j") == 1
        writer.samples.record([_sample("j", 2.0)])  # the reader holds no lock
        assert reader.samples.count("j") == 2
        with pytest.raises(StoreUnavailable, match="readonly"):
            reader.samples.record([_sample("j", 3.0)])
        assert writer.samples.count("j") == 2
    finally:
        reader.close()
        writer.close()
    with pytest.raises(StoreError, match="no store"):
        SqliteStore(tmp_path / "missing.sqlite", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()


def test_an_older_store_opened_read_only_has_no_series_and_is_not_migrated(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.sqlite"
    with SqliteStore(path) as store:
        store.db.execute("DROP TABLE samples")
        store.db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    before = path.read_bytes()
    with SqliteStore(path, readonly=True) as store:
        assert not store.samples.available()
        assert store.samples.series("any") == []
        assert store.queries.meta("schema_version") == "2"
    assert path.read_bytes() == before  # not a byte written, not migrated


def test_snapshot_counts_attempts_and_admitted_bytes_by_job() -> None:
    snap = snapshot(
        5.0, 1000, 300, ["a", "b", "idle"], [("a", 100), ("a", 50), ("b", 150)], {"w1": 1}
    )
    assert snap.jobs == {"a": (2, 150), "b": (1, 150), "idle": (0, 0)}
    assert snap.workers == {"w1": 1}


def test_a_sampler_that_cannot_write_logs_and_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "not-a-store"
    bad.write_text("this is not SQLite")
    sampler = Sampler(str(bad), interval=0.01)
    sampler.start()
    try:
        with caplog.at_level(logging.WARNING, logger="oomguard.scheduler.samples"):
            sampler.offer(snapshot(1.0, 10, 0, ["j"], [], {}))
            assert wait_for(lambda: "cannot open the store" in caplog.text, timeout=10)
    finally:
        sampler.stop()
    assert sampler.written == 0
    # A store it can open gets what is queued when it stops.
    good = tmp_path / "s.sqlite"
    SqliteStore(good).close()
    sampler = Sampler(str(good), interval=60.0)
    sampler.start()
    sampler.offer(snapshot(time.time(), 10, 4, ["j"], [("j", 4)], {}))
    sampler.stop()
    with SqliteStore(good) as store:
        assert [(s.running, s.job_admitted_bytes) for s in store.samples.series("j")] == [(1, 4)]


def test_the_sampler_checkpoints_what_the_loop_wrote(tmp_path: Path) -> None:
    # The loop's connection defers the WAL's checkpoints (store.defer_checkpoints): the
    # sampler's thread checkpoints after each of its writes. What a checkpoint copied is
    # in the store file itself: a copy of that file alone (no WAL) shows it.
    path = tmp_path / "s.sqlite"

    def in_the_file() -> int:
        copy = tmp_path / f"copy-{time.monotonic_ns()}.sqlite"
        shutil.copyfile(path, copy)
        with sqlite3.connect(copy) as db:
            return int(db.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'k%'").fetchone()[0])

    with SqliteStore(path) as loop:
        loop.checkpoint()  # the new store's schema in the file
        loop.defer_checkpoints()
        for n in range(1500):  # 1,500 commits of a page or more: past SQLite's 1,000
            with loop.transaction() as db:
                db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"k{n}", "x" * 3000))
        assert in_the_file() == 0  # the loop's commits checkpointed nothing
        sampler = Sampler(str(path), interval=60.0)
        sampler.start()
        sampler.offer(snapshot(time.time(), 10, 4, ["j"], [("j", 4)], {}))
        sampler.stop()
        assert in_the_file() == 1500
