"""Parquet parts are cut by rows, by bytes and by time, and each row lands in one part."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

import oomguard
from fixtures.polling import wait_for

pytestmark = pytest.mark.timeout(180)


def _parts(out: Path) -> list[Path]:
    return sorted((out / "tasks").glob("part-*.parquet"))


def test_parts_are_bounded_by_bytes_not_only_rows(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # 1.5 MiB results, 4 MiB parts: two results a part, however many rows a part may hold.
    with oomguard.Runner(store=str(tmp_path / "s.sqlite"), workers=2, part_bytes="4MiB") as r:
        job = r.sweep("fixtures.tasks:blob_result", [{"seed": s} for s in range(7)], out=out)
        job.wait(timeout=120, progress=False)
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in _parts(out)]
    assert sum(sizes) == 7
    assert max(sizes) == 2
    seeds = sorted(pq.read_table(out / "tasks").column("seed").to_pylist())
    assert seeds == list(range(7))  # each row once


def test_a_result_waits_at_most_part_max_delay_for_its_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with oomguard.Runner(store=str(tmp_path / "s.sqlite"), workers=2, part_max_delay=0.5) as r:
        job = r.sweep(
            "fixtures.tasks:sleep_then",
            [{"x": 1, "seconds": 0.0}, {"x": 2, "seconds": 30.0}],
            out=out,
        )
        # The quick task's row is in a part while the slow one still runs: the job is not
        # finished and far from part_rows, so only the delay can have cut that part.
        wait_for(lambda: _parts(out), timeout=5)
        assert job.status()["counts"]["running"] == 1
        assert pq.read_table(_parts(out)[0]).column("x").to_pylist() == [1]
        r.store.admin.cancel(job.id)


def test_a_schema_1_store_is_migrated_and_its_results_exported(tmp_path: Path) -> None:
    """A store written before results recorded their size still gets its parts written."""
    import sqlite3

    from oomguard.store import SCHEMA_VERSION
    from oomguard.store.sqlite import SqliteStore

    path = tmp_path / "old.sqlite"
    out = tmp_path / "out"
    with oomguard.Runner(store=str(path), workers=1) as r:
        job = r.sweep("fixtures.tasks:sleep_then", [{"x": 1}, {"x": 2}], out=out)
        job.wait(timeout=60, progress=False)
    # Turn it back into schema 1, with its results not yet exported.
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE results DROP COLUMN size")
    for column in ("peak_sum", "peak_sq", "killed_at", "unfit_cap", "proof"):  # schema 3
        db.execute(f"ALTER TABLE estimates DROP COLUMN {column}")
    for table, column in (  # schema 7
        ("schedulers", "replica"),
        ("schedulers", "taken_over_at"),
        ("schedulers", "taken_over_by"),
        ("tasks", "owner"),
        ("jobs", "reserved"),
        ("jobs", "told"),
        ("locks", "owner"),
    ):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.execute("DROP TABLE samples")  # schema 4
    db.execute("DROP TABLE outbox")  # schema 6
    db.execute("DROP TABLE outbox_cursors")
    db.execute("DROP INDEX tasks_state")  # schema 5: the three indexes it replaced
    db.execute("CREATE INDEX tasks_ready ON tasks(job_id, grp, id) WHERE state = 'ready'")
    db.execute(
        "CREATE INDEX tasks_open ON tasks(job_id, grp) "
        "WHERE state IN ('pending', 'ready', 'queued', 'running')"
    )
    db.execute("CREATE INDEX tasks_job_state ON tasks(job_id, state)")
    db.execute("UPDATE results SET part = NULL")
    db.execute("DELETE FROM parts")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    for p in _parts(out):
        p.unlink()

    with SqliteStore(path) as st:
        assert st.queries.meta("schema_version") == str(SCHEMA_VERSION)
        columns = {row[1] for row in st.db.execute("PRAGMA table_info(results)")}
        assert "size" in columns
        indexes = {
            row[0]
            for row in st.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'"
            )
        }
        assert indexes == {"tasks_job_grp", "tasks_state"}
        # Schema 3: what each memory key is known to need, kept from schema 1's estimates.
        knowledge = st.estimate_rows()
        assert knowledge and all(r.samples >= 1 and r.killed_at == 0 for r in knowledge.values())
    with oomguard.Runner(store=str(path), workers=1) as r:
        r.job(job.id).wait(timeout=60, progress=False)
    assert sorted(pq.read_table(out / "tasks").column("x").to_pylist()) == [1, 2]


def test_two_jobs_writing_to_one_out_keep_both_jobs_rows(tmp_path: Path) -> None:
    """Two different `oomguard run` jobs with the same --out (the README's study, then the
    same study with --set): neither replaces the other's parts; resuming a job appends."""
    import json
    import subprocess
    import sys

    import pyarrow.dataset as ds

    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(json.dumps({"x": i}) + "\n" for i in range(12)))
    second.write_text("".join(json.dumps({"x": 100 + i}) + "\n" for i in range(5)))

    def run(params: Path) -> None:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "oomguard.cli.main",
                "run",
                "oomguard.examples:noop",
                "--params",
                str(params),
                "--out",
                "out",
                "--store",
                "s.sqlite",
                "--workers",
                "2",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr

    run(first)
    run(second)
    out = tmp_path / "out"
    xs = sorted(ds.dataset(out / "tasks").to_table().column("x").to_pylist())
    assert xs == list(range(12)) + list(range(100, 105))  # both jobs' rows, each once
    names = [p.name for p in _parts(out)]
    assert len({n.split("-")[1] for n in names}) == 2, names  # named by their two jobs

    # The first job again (same params: the same job) resumes: nothing rewritten or lost.
    run(first)
    assert sorted(p.name for p in _parts(out)) == sorted(names)
    xs = sorted(ds.dataset(out / "tasks").to_table().column("x").to_pylist())
    assert xs == list(range(12)) + list(range(100, 105))
