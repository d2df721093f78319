"""Configuration only from where the user pointed (config.py ``config_source``), against
real ``oomguard run`` and ``oomguard serve`` processes started beside a planted
``./oomguard.toml``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.serve_process import serve
from oomguard.cli.exit_codes import ExitCode
from oomguard.config import load_config

pytestmark = pytest.mark.timeout(180)
#: a value `run` refuses (exit 2): seen refused, the file was read
BAD = "worker_oom_score_adj = -1000\n"


def _run(cli: Any, where: Path) -> Any:
    (where / "p.jsonl").write_text('{"x": 1}\n')
    return cli(
        "run",
        "oomguard.examples:noop",
        "--params",
        "p.jsonl",
        "--store",
        "s.sqlite",
        "--workers",
        "1",
        cwd=where,
        timeout=120,
    )


def _plant(where: Path, text: str, mode: int = 0o644, uid: int | None = None) -> Path:
    where.mkdir(exist_ok=True)
    path = where / "oomguard.toml"
    path.write_text(text)
    path.chmod(mode)
    if uid is not None:
        os.chown(path, uid, -1)
    return path


def test_run_reads_its_own_private_oomguard_toml_and_says_so(tmp_path: Path, cli: Any) -> None:
    path = _plant(tmp_path / "mine", BAD)
    res = _run(cli, tmp_path / "mine")
    assert res.returncode == ExitCode.USAGE, res.stderr
    assert f"config from {path.resolve()} (found in this directory)" in res.stderr


@pytest.mark.parametrize(
    "mode,uid,why",
    [
        (0o666, None, "it is writable by group or others (mode 666)"),
        (0o664, None, "it is writable by group or others (mode 664)"),
        (0o644, 65534, "it is owned by uid 65534, not by you"),
    ],
)
def test_run_ignores_an_oomguard_toml_others_could_have_planted(
    tmp_path: Path, cli: Any, mode: int, uid: int | None, why: str
) -> None:
    if uid is not None and os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    _plant(tmp_path / "shared", BAD, mode, uid)
    res = _run(cli, tmp_path / "shared")
    assert res.returncode == 0, res.stderr  # BAD was not applied
    assert f"ignoring ./oomguard.toml: {why}" in res.stderr
    assert "name a file with --config to use it" in res.stderr


def test_an_unnamed_file_never_sets_where_oomguard_connects(tmp_path: Path, cli: Any) -> None:
    _plant(tmp_path / "mine", 'executor = "dask"\ndask_address = "tcp://127.0.0.1:9"\n')
    res = _run(cli, tmp_path / "mine")
    assert res.returncode == ExitCode.USAGE, res.stderr
    assert "was not named, so it may not set dask_address, executor" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "mine" / "s.sqlite").exists()
    # Named, the same file is the user's choice.
    named = tmp_path / "mine" / "oomguard.toml"
    assert load_config(named, env={}).dask_address == "tcp://127.0.0.1:9"
    assert load_config(env={"OOMGUARD_CONFIG": str(named)}).executor == "dask"


def test_run_config_option_names_the_file(tmp_path: Path, cli: Any) -> None:
    elsewhere = _plant(tmp_path / "conf", BAD, 0o666)  # named: the user's choice
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "p.jsonl").write_text('{"x": 1}\n')
    res = cli(
        "run",
        "oomguard.examples:noop",
        "--params",
        "p.jsonl",
        "--store",
        "s.sqlite",
        "--config",
        str(elsewhere),
        cwd=tmp_path / "work",
        timeout=120,
    )
    assert res.returncode == ExitCode.USAGE, res.stderr
    assert f"config from {elsewhere.resolve()}" in res.stderr


def test_serve_beside_a_planted_oomguard_toml_starts_ignores_it_and_says_so(
    tmp_path: Path,
) -> None:
    # Each of these, read, would hurt: history gone in seconds, every failure sent away,
    # a "Dask scheduler" that speaks pickle to the server.
    planted = _plant(
        tmp_path / "cwd",
        'retention = "2s"\nexecutor = "dask"\n'
        'dask_address = "tcp://127.0.0.1:9"\n'
        'notify_url = ["http://127.0.0.1:9/steal"]\n',
    )
    with serve(tmp_path, "--workers", "1", cwd=planted.parent) as served:
        r = httpx.post(f"{served.url}/v1/jobs", json={"task": "oomguard.examples:noop"})
        assert r.status_code == 201, r.text
        log = served.output()
        assert "ignoring ./oomguard.toml: a config file is read only when named" in log
        metrics = httpx.get(f"{served.url}/metrics").text
        assert 'mode="dask"' not in metrics and "oomguard_worker_isolation{" in metrics
    assert served.proc.returncode == 0, served.output()


def test_serve_reads_the_config_it_is_given(tmp_path: Path) -> None:
    conf = _plant(tmp_path / "conf", 'retention = "7d"\nworkers = 1\n')
    with serve(tmp_path, "--config", str(conf)) as served:
        assert f"config from {conf.resolve()}" in served.output()
        assert "oomguard_retention_deleted" in httpx.get(f"{served.url}/metrics").text
