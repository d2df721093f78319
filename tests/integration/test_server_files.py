"""Files of a real `oomguard serve` / `oomguard run`: secrets refused when others may read
them (as ssh refuses such a key), the store and its blobs private, a blob directory of
another user refused, HTTPS, the workers' oom_score_adj only ever raised, and Parquet
identity columns that a parameter cannot overwrite."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import stat
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import run_cli
from fixtures.serve_process import serve
from oomguard.cli.bench import free_port
from oomguard.cli.exit_codes import ExitCode

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_token_file_open_to_others_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a-token-of-more-than-16-characters\n")
    for open_mode in (0o644, 0o640, 0o604, 0o660):
        token.chmod(open_mode)
        done = run_cli(
            "serve",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--token-file",
            str(token),
            timeout=60,
        )
        assert done.returncode == ExitCode.USAGE, done.stderr
        assert "chmod 600" in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "s.sqlite").exists()
        client = run_cli(
            "submit",
            "oomguard.examples:noop",
            "--server",
            f"http://127.0.0.1:{free_port()}",
            "--token-file",
            str(token),
            timeout=60,
        )
        assert client.returncode == ExitCode.USAGE, client.stderr
        assert "chmod 600" in client.stderr


def test_store_and_blobs_are_private(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "1") as served:
        big = {"task": "oomguard.examples:noop", "args": {"x": "b" * (200 * 1024)}}
        r = httpx.post(f"{served.url}/v1/jobs", json=big)
        assert r.status_code == 201, r.text
        store = served.store
        blobs = store.with_name(store.name + ".blobs")
        files = [store, Path(f"{store}-wal"), Path(f"{store}-shm")]
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
        assert mode(blobs) == 0o700
        stored = list(blobs.iterdir())
        assert stored and all(mode(p) == 0o600 for p in stored)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_blob_directory_of_another_user_refused(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    blobs = tmp_path / "s.sqlite.blobs"
    blobs.mkdir()
    (blobs / ("0" * 64)).write_bytes(b"a planted pickle")
    os.chown(blobs, NOBODY, NOBODY)
    listen = f"127.0.0.1:{free_port()}"
    done = run_cli("serve", "--store", str(store), "--listen", listen, timeout=60)
    assert done.returncode == ExitCode.STORE, done.stderr
    assert "belongs to uid 65534" in done.stderr and "Traceback" not in done.stderr
    os.chown(blobs, 0, 0)
    blobs.chmod(0o777)  # ours, but anyone may add files to it
    done = run_cli("serve", "--store", str(store), "--listen", listen, timeout=60)
    assert done.returncode == ExitCode.STORE, done.stderr
    assert "chmod 700" in done.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    key.chmod(0o600)
    trust = ssl.create_default_context(cafile=str(cert))
    args = ("--workers", "1", "--tls-cert", str(cert), "--tls-key", str(key))
    with serve(tmp_path, *args, scheme="https", verify=trust) as served:
        r = httpx.get(f"{served.url}/v1/jobs", verify=trust)
        assert r.status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{served.port}/healthz", timeout=5)
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a key\n")
    bogus.chmod(0o600)
    for bad, message in (
        (("--tls-cert", str(cert)), "go together"),
        (("--tls-cert", str(cert), "--tls-key", str(bogus)), "cannot use"),
    ):
        done = run_cli("serve", "--store", str(tmp_path / "x.sqlite"), *bad, timeout=60)
        assert done.returncode == ExitCode.USAGE, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
    key.chmod(0o644)
    done = run_cli(
        "serve",
        "--store",
        str(tmp_path / "x.sqlite"),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        timeout=60,
    )
    assert done.returncode == ExitCode.USAGE and "chmod 600" in done.stderr
    assert not (tmp_path / "x.sqlite").exists()


def test_worker_oom_score_adj_only_raised(tmp_path: Path) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text('{"x": 1}\n')
    run = ("run", "oomguard.examples:noop", "--params", str(params), "--store")
    hows: tuple[dict[str, Any], ...] = (
        {"args": ("--worker-oom-score-adj", "-500")},
        {"env": {"OOMGUARD_WORKER_OOM_SCORE_ADJ": "-1"}},
        {"config": "worker_oom_score_adj = -1000\n"},
    )
    for how in hows:
        store = tmp_path / f"s{len(list(tmp_path.iterdir()))}.sqlite"
        env = dict(how.get("env", {}))
        if "config" in how:
            (tmp_path / "oomguard.toml").write_text(str(how["config"]))
            env["OOMGUARD_CONFIG"] = str(tmp_path / "oomguard.toml")
        done = run_cli(*run, str(store), *how.get("args", ()), env=env, timeout=60)
        assert done.returncode == ExitCode.USAGE, (how, done.stderr)
        assert "Traceback" not in done.stderr
        assert not store.exists()


def test_parameters_never_overwrite_identity_columns(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    params = tmp_path / "p.jsonl"
    rows = [
        {"task_id": 999, "group": "mine", "replicate": "r", "attempts": -1, "x": i}
        for i in range(3)
    ]
    params.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = run_cli(
        "run",
        "fixtures.tasks:keywords",
        "--params",
        str(params),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "1",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "out" / "tasks").to_pylist()
    assert sorted(r["group"] for r in table) == [0, 1, 2]
    assert len({r["task_id"] for r in table}) == 3 and 999 not in {r["task_id"] for r in table}
    assert all(r["attempts"] == 1 for r in table)
    assert all(
        (r["param.task_id"], r["param.group"], r["param.replicate"], r["param.attempts"])
        == (999, "mine", "r", -1)
        for r in table
    )
    assert sorted(r["x"] for r in table) == [0, 1, 2]
    assert all(r["result"] == 5 for r in table)
