"""Dask progress files (executors/dask/remote/progress.py): in a private runtime directory,
opened O_EXCL | O_NOFOLLOW, read after the writer's SIGKILL and removed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from oomguard.executors.dask.remote.answers import WorkerProgress
from oomguard.executors.dask.remote.progress import (
    Progress,
    progress_path,
    read_progress,
    runtime_dir,
)


@pytest.fixture(autouse=True)
def tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return tmp_path


def test_a_killed_writers_progress_is_read_once_then_gone(tmp_root: Path) -> None:
    code = (
        "import os, signal; from oomguard.executors.dask.remote.progress import Progress; "
        "p = Progress(); p.note('group-7', 3); os.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    assert proc.wait(60) == -9
    directory = runtime_dir()
    assert directory is not None and oct(os.stat(directory).st_mode & 0o777) == "0o700"
    assert read_progress(proc.pid) == WorkerProgress("group-7", 3)
    assert read_progress(proc.pid) is None and os.listdir(directory) == []


def test_a_planted_link_is_not_written_through(tmp_root: Path) -> None:
    victim = tmp_root / "victim"
    victim.write_text("precious")
    path = progress_path(os.getpid())
    assert path is not None
    os.symlink(victim, path)
    progress = Progress()
    progress.note("k", 1)
    assert victim.read_text() == "precious"
    assert not os.path.islink(path) and read_progress(os.getpid(), remove=False) == WorkerProgress(
        "k", 1
    )
    progress.close()
    assert not os.path.exists(path)


@pytest.mark.parametrize("how", ["open", "foreign"])
def test_a_runtime_directory_others_could_use_means_no_progress_file(
    tmp_root: Path, how: str
) -> None:
    directory = tmp_root / f"oomguard-{os.geteuid()}"
    directory.mkdir()
    if how == "open":
        directory.chmod(0o777)
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root to give the directory to another user")
        directory.chmod(0o700)
        os.chown(directory, 65534, -1)
    assert runtime_dir() is None and progress_path(os.getpid()) is None
    progress = Progress()
    assert progress.fd is None
    progress.note("k", 1)  # nothing written, nothing raised
    assert os.listdir(directory) == []
