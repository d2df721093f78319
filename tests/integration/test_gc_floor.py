"""`oomguard gc --min-age` below 10 minutes needs --force: a blob is written before the
row that refers to it commits, so a young unreferenced blob may be about to be used."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from oomguard.cli.exit_codes import ExitCode
from oomguard.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from conftest import RunCli


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    """An unreferenced blob file five minutes old, beside the store ``tmp_path/s.sqlite``."""
    with SqliteStore(tmp_path / "s.sqlite") as st:
        path = st.blob_dir / st.blobs.put(b"x" * 10)
    then = time.time() - 300
    os.utime(path, (then, then))
    return path


@pytest.mark.parametrize("min_age", ["0s", "5m", "9m59s"])
def test_below_the_floor_is_refused_and_deletes_nothing(
    tmp_path: Path, blob: Path, cli: RunCli, min_age: str
) -> None:
    for dry_run in ([], ["--dry-run"]):
        refused = cli("gc", "--store", str(tmp_path / "s.sqlite"), "--min-age", min_age, *dry_run)
        assert refused.returncode == ExitCode.USAGE, refused.stderr
        assert f"'{min_age}' is below the 10m floor" in refused.stderr
        assert "--force" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert blob.exists()


def test_the_floor_itself_is_allowed(tmp_path: Path, blob: Path, cli: RunCli) -> None:
    done = cli("gc", "--store", str(tmp_path / "s.sqlite"), "--min-age", "10m", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["young"], report["removed"]) == (1, 0)
    assert blob.exists()


@pytest.mark.parametrize("force", [["--force"], []], ids=["option", "env"])
def test_force_goes_below_the_floor(
    tmp_path: Path, blob: Path, cli: RunCli, force: list[str]
) -> None:
    env = None if force else {"OOMGUARD_GC_FORCE": "1"}
    done = cli(
        "gc", "--store", str(tmp_path / "s.sqlite"), "--min-age", "1m", *force, "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == 1
    assert not blob.exists()
