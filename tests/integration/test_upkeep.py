"""`oomguard forget` and `oomguard gc`: a long-lived store stays small, nothing in use is lost."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

import oomguard
from oomguard.cli.exit_codes import ExitCode
from oomguard.errors import BlobMissingError
from oomguard.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from conftest import RunCli

pytestmark = pytest.mark.timeout(180)


def _stored(value: bytes | BlobMissingError) -> bytes:
    """A result's pickled value, which the test expects stored (not a missing blob)."""
    assert isinstance(value, bytes), value
    return value


def _age(directory: Path, seconds: float) -> None:
    """Make every file in ``directory`` look ``seconds`` old."""
    then = time.time() - seconds
    for path in directory.iterdir():
        os.utime(path, (then, then))


def test_forget_then_gc_frees_only_what_the_forgotten_job_used(tmp_path: Path, cli: RunCli) -> None:
    store = tmp_path / "s.sqlite"
    blobs = tmp_path / "s.sqlite.blobs"
    with oomguard.Runner(store=str(store), workers=2) as runner:
        # seed 1 is in both jobs: its result blob is shared and must survive.
        old = runner.sweep(
            "fixtures.tasks:blob_result",
            [{"seed": s} for s in (1, 2, 3)],
            out=tmp_path / "old",
            name="old",
        )
        old.wait(timeout=120, progress=False)
        keep = runner.sweep(
            "fixtures.tasks:blob_result", [{"seed": s} for s in (1, 4)], name="keep"
        )
        keep.wait(timeout=120, progress=False)
    assert len(list(blobs.iterdir())) == 4  # seeds 1, 2, 3, 4: equal results share a file
    _age(blobs, 7200)

    done = cli("forget", old.id, "--store", str(store), "--json")
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    assert {k: counts[k] for k in ("job_id", "tasks", "attempts", "results")} == {
        "job_id": old.id,
        "tasks": 3,
        "attempts": 3,
        "results": 3,
    }
    assert counts["events"] >= 1
    gone = cli("status", old.id, "--store", str(store))
    assert gone.returncode == ExitCode.NOT_FOUND, gone.stderr
    # The Parquet output is the user's: it stays.
    assert pq.read_table(tmp_path / "old" / "tasks").num_rows == 3

    dry = cli("gc", "--store", str(store), "--min-age", "1h", "--dry-run", "--json")
    assert json.loads(dry.stdout)["removed"] == 2
    assert len(list(blobs.iterdir())) == 4  # a dry run deletes nothing

    swept = cli("gc", "--store", str(store), "--min-age", "1h", "--json")
    assert swept.returncode == 0, swept.stderr
    report = json.loads(swept.stdout)
    assert (report["blobs"], report["referenced"], report["removed"]) == (4, 2, 2)
    one = int(1.5 * 1024 * 1024)  # the pickled result: the bytes plus a small header
    assert 2 * one < report["removed_bytes"] < 2 * (one + 64)
    # The job that was kept still reads every result, the shared one included.
    with SqliteStore(store, create=False) as st:
        values = sorted(
            pickle.loads(_stored(v))[0] for *_, v in st.queries.result_rows(keep.id, "task")
        )
    assert values == [1, 4]


def test_forget_refuses_a_job_with_work_in_flight(tmp_path: Path, cli: RunCli) -> None:
    store = tmp_path / "s.sqlite"
    with oomguard.Runner(store=str(store), workers=1) as runner:
        job = runner.sweep("oomguard.examples:sleep", [{"seconds": 30.0}, {"seconds": 0.0}])
        deadline = time.monotonic() + 30
        while job.status()["counts"]["running"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = cli("forget", job.id, "--store", str(store))
        assert refused.returncode == ExitCode.JOB_ACTIVE
        assert "cancel it first" in refused.stderr
        assert sum(job.status()["counts"].values()) == 2  # nothing deleted
        runner.store.admin.cancel(job.id)
        deadline = time.monotonic() + 30
        while job.status()["counts"]["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
    done = cli("forget", job.id, "--store", str(store))
    assert done.returncode == 0, done.stderr
    assert "2 task(s)" in done.stdout


def test_gc_keeps_a_blob_that_is_reused_and_clears_leftover_temporaries(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.sqlite") as st:
        name = st.blobs.put(b"x" * 10)
        leftover = st.blob_dir / ".tmp-killed-writer"
        leftover.write_bytes(b"half")
        _age(st.blob_dir, 7200)
        # A scheduler about to refer to the same content again: the reuse makes it young.
        assert st.blobs.put(b"x" * 10) == name
        report = st.blobs.collect_garbage(min_age=3600)
        assert (report.young, report.removed, report.temporary_removed) == (1, 0, 1)
        assert (st.blob_dir / name).exists() and not leftover.exists()
        _age(st.blob_dir, 7200)
        assert st.blobs.collect_garbage(min_age=3600).removed == 1
        assert not (st.blob_dir / name).exists()
        # Gone from disk, so the next writer of that content writes it afresh.
        assert st.blobs.put(b"x" * 10) == name
        assert (st.blob_dir / name).read_bytes() == b"x" * 10


def test_gc_rejects_a_bad_duration(tmp_path: Path, cli: RunCli) -> None:
    SqliteStore(tmp_path / "s.sqlite").close()
    bad = cli("gc", "--store", str(tmp_path / "s.sqlite"), "--min-age", "soon")
    assert bad.returncode == ExitCode.USAGE
    assert "invalid duration 'soon'" in bad.stderr
