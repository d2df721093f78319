"""The store checked like the blob directory (store/ownership.py): an existing store, or
its ``-wal`` or ``-shm``, that another user owns or others may write is refused by the
real CLI (``run``, ``status``, ``serve``) with exit code STORE, and left as it was."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from oomguard.cli.exit_codes import ExitCode
from oomguard.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(180)


def _store(tmp_path: Path) -> Path:
    path = tmp_path / "s.sqlite"
    SqliteStore(path).close()
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(cli: Any, tmp_path: Path, store: Path) -> Any:
    params = tmp_path / "p.jsonl"
    params.write_text('{"x": 1}\n')
    return cli(
        "run",
        "oomguard.examples:noop",
        "--params",
        str(params),
        "--store",
        str(store),
        "--workers",
        "1",
        timeout=120,
    )


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_store_file_others_may_write_is_refused(tmp_path: Path, cli: Any, suffix: str) -> None:
    store = _store(tmp_path)
    target = Path(f"{store}{suffix}")
    if not target.exists():
        target.write_bytes(b"")
    target.chmod(0o666)
    before = _digest(store)
    res = _run(cli, tmp_path, store)
    assert res.returncode == ExitCode.STORE, res.stderr
    assert (
        f"store file {str(target)!r} may be written by its group or others (mode 0666)"
        in res.stderr
    )
    assert f"chmod 600 {str(target)!r}" in res.stderr and "Traceback" not in res.stderr
    assert _digest(store) == before
    status = cli("status", "--store", str(store), timeout=60)
    assert status.returncode == ExitCode.STORE, status.stderr


def test_a_store_another_user_owns_is_refused(tmp_path: Path, cli: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the store to another user")
    store = _store(tmp_path)
    os.chown(store, 65534, -1)
    res = _run(cli, tmp_path, store)
    assert res.returncode == ExitCode.STORE, res.stderr
    assert "belongs to uid 65534, not to this user" in res.stderr
    # serve refuses it too, before it listens.
    served = subprocess.run(
        [
            sys.executable,
            "-m",
            "oomguard.cli.main",
            "serve",
            "--store",
            str(store),
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == ExitCode.STORE, served.stderr
    assert "belongs to uid 65534" in served.stderr


def test_a_private_store_is_used(tmp_path: Path, cli: Any) -> None:
    store = _store(tmp_path)
    assert _run(cli, tmp_path, store).returncode == 0
    assert oct(store.stat().st_mode & 0o777) == "0o600"
