"""Bad input: a one-line error, a documented exit code, and nothing stored changes."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from oomguard.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from conftest import RunCli


@pytest.fixture
def params(tmp_path: Path) -> Path:
    p = tmp_path / "p.jsonl"
    p.write_text('{"x": 1}\n{"x": 2}\n')
    return p


@pytest.fixture
def store(tmp_path: Path, cli: RunCli, params: Path) -> Path:
    s = tmp_path / "s.sqlite"
    res = cli(
        "run",
        "oomguard.examples:noop",
        "--params",
        str(params),
        "--store",
        str(s),
        "--workers",
        "1",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    return s


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check(res: subprocess.CompletedProcess[str], code: ExitCode, words: str) -> None:
    assert res.returncode == int(code), (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert words in lines[0], lines[0]


@pytest.mark.parametrize(
    "task,words",
    [
        ("no_such_module_xyz:f", "no module named 'no_such_module_xyz'"),
        ("oomguard.examples:nope", "has no function 'nope'"),
        ("just-a-name", "invalid task reference"),
        ("/nonexistent/file.py:f", "no such file"),
    ],
)
def test_unknown_task(cli: RunCli, params: Path, store: Path, task: str, words: str) -> None:
    before = _digest(store)
    res = cli("run", task, "--params", str(params), "--store", str(store))
    _check(res, ExitCode.NOT_FOUND, words)
    assert _digest(store) == before


@pytest.mark.parametrize(
    "line,words",
    [
        ("[1, 2]", "expected a JSON object"),
        ("{not json", "not valid JSON"),
        ('"text"', "expected a JSON object"),
    ],
)
def test_bad_params_line(cli: RunCli, tmp_path: Path, store: Path, line: str, words: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n' + line + "\n")
    before = _digest(store)
    res = cli("run", "oomguard.examples:noop", "--params", str(bad), "--store", str(store))
    _check(res, ExitCode.PAYLOAD, f"{bad}:2")
    assert words in res.stderr
    assert _digest(store) == before


def test_missing_params_file(cli: RunCli, tmp_path: Path) -> None:
    res = cli(
        "run",
        "oomguard.examples:noop",
        "--params",
        str(tmp_path / "none.jsonl"),
        "--store",
        str(tmp_path / "s.sqlite"),
    )
    _check(res, ExitCode.NOT_FOUND, "no params file")  # 3, as the README lists
    assert not (tmp_path / "s.sqlite").exists()


def test_store_that_is_not_a_store(cli: RunCli, tmp_path: Path, params: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("my precious notes\n" * 50)
    before = _digest(bogus)
    res = cli("run", "oomguard.examples:noop", "--params", str(params), "--store", str(bogus))
    _check(res, ExitCode.STORE, "not an oomguard store")
    assert _digest(bogus) == before


def test_out_dir_that_is_a_file(cli: RunCli, tmp_path: Path, params: Path) -> None:
    out = tmp_path / "out"
    out.write_text("x")
    res = cli(
        "run",
        "oomguard.examples:noop",
        "--params",
        str(params),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--out",
        str(out),
    )
    _check(res, ExitCode.OUTPUT, "is a file")


@pytest.mark.parametrize("size", ["lots", "-1", "12 parsecs"])
def test_bad_size(cli: RunCli, tmp_path: Path, params: Path, size: str) -> None:
    res = cli(
        "run",
        "oomguard.examples:noop",
        "--params",
        str(params),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--worker-memory",
        size,
    )
    _check(res, ExitCode.USAGE, "invalid memory size")


def test_worker_memory_larger_than_the_machine(cli: RunCli, tmp_path: Path, params: Path) -> None:
    res = cli(
        "run",
        "oomguard.examples:noop",
        "--params",
        str(params),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--worker-memory",
        "100TiB",
    )
    _check(res, ExitCode.USAGE, "larger than")


def test_unknown_job(cli: RunCli, store: Path) -> None:
    res = cli("status", "ffffffff", "--store", str(store))
    _check(res, ExitCode.NOT_FOUND, "no job 'ffffffff'")


def test_rerun_resumes_instead_of_running_again(cli: RunCli, params: Path, store: Path) -> None:
    res = cli(
        "run", "oomguard.examples:noop", "--params", str(params), "--store", str(store), "--json"
    )
    assert res.returncode == 0
    assert json.loads(res.stdout)["counts"]["succeeded"] == 2
    info = json.loads(cli("status", "--store", str(store), "--json").stdout)
    assert info["tasks"] == 2
    import sqlite3

    db = sqlite3.connect(store)
    assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 2
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    db.close()


@pytest.mark.parametrize(
    "args,words",
    [
        (["--notify-url", "ftp://example"], "is not an http:// or https:// URL"),
        (
            ["--notify-url", "http://127.0.0.1:9/x", "--notify-secret-file", "/nonexistent/key"],
            "cannot read --notify-secret-file",
        ),
        (["--sentry-dsn", "not-a-dsn"], "is not a valid Sentry DSN"),
    ],
)
def test_bad_notification_settings(
    cli: RunCli, params: Path, store: Path, args: list[str], words: str
) -> None:
    before = _digest(store)
    res = cli(
        "run", "oomguard.examples:noop", "--params", str(params), "--store", str(store), *args
    )
    _check(res, ExitCode.USAGE, words)
    assert _digest(store) == before


def test_help_texts_agree_with_the_readme(cli: RunCli) -> None:
    """run's options in sections with their defaults; readers of a store never create it."""
    res = cli("run", "--help")
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())  # help is wrapped
    sections = [
        "What to run:",
        "Where it is kept:",
        "Workers and memory:",
        "Retries and time limits:",
        "Dask:",
        "Notifications:",
        "Output:",
    ]
    assert [text.index(s) for s in sections] == sorted(text.index(s) for s in sections)
    for default in (
        "[default: the memory budget]",
        "[default: auto]",
        "[default: 0]",
        "[default: no limit]",
    ):
        assert default in text, default
    for command in ("status", "results", "retry", "cancel", "forget", "gc"):
        res = cli(command, "--help")
        assert "created if missing" not in res.stdout, command
        assert "it must exist" in " ".join(res.stdout.split()), command
