"""Commands declared, not templated (api/commands.py, jobs/command_fields.py), against a
real ``oomguard serve``: values that would be options, the server's environment, the
directory a command runs in, typed fields, and entries that would run anything."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.polling import wait_for
from fixtures.serve_process import Served, serve
from oomguard.cli.exit_codes import ExitCode
from oomguard.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(300)
SHOW = str(Path(__file__).resolve().parents[1] / "fixtures" / "show_env.py")
#: what the server's environment holds and no command may see
SECRETS = {"DEPLOY_SECRET": "hunter2", "OOMGUARD_SENTRY_DSN": "", "AWS_SECRET_ACCESS_KEY": "k"}


@pytest.fixture
def server(tmp_path: Path) -> Any:
    commands = tmp_path / "commands.toml"
    py = json.dumps(sys.executable)
    show = json.dumps(SHOW)
    commands.write_text(
        f'show = [{py}, {show}, "{{word}}"]\n'
        f'grep = ["/bin/grep", "{{pattern}}", "{commands}"]\n'
        f'relative = [{py}, "show_env.py"]\n'
        "[typed]\n"
        f'argv = [{py}, {show}, "{{n}}", "{{x}}", "{{mode}}", "{{name}}", "{{flag}}"]\n'
        f'cwd = "{tmp_path}"\n'
        'env = { ONLY = "this" }\n'
        'fields.n = { type = "int" }\n'
        'fields.x = { type = "float" }\n'
        'fields.mode = { type = "enum", values = ["fast", "exact"] }\n'
        'fields.name = { type = "regex", pattern = "[a-z]{1,8}" }\n'
        'fields.flag = { type = "enum", values = ["-v", "-q"], options = true }\n'
    )
    with serve(
        tmp_path,
        "--workers",
        "1",
        "--commands",
        str(commands),
        env={**SECRETS, "DEPLOY_SECRET": "hunter2"},
    ) as served:
        yield served


def _submit(served: Served, command: str, args: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/jobs", json={"command": command, "args": args}, timeout=30)


def _result(served: Served, r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    wait_for(
        lambda: (
            httpx.get(f"{served.url}/v1/jobs/{job_id}").json()["state"]
            not in ("waiting", "running")
        ),
        timeout=60,
        interval=0.1,
    )
    with SqliteStore(served.store) as store:
        rows = list(store.queries.result_rows(job_id))
    assert len(rows) == 1, served.output()
    value = rows[0][-1]
    assert isinstance(value, bytes)
    result: dict[str, Any] = pickle.loads(value)
    return result


def test_a_value_that_would_be_an_option_is_refused(server: Served) -> None:
    r = _submit(server, "grep", {"pattern": "-r"})
    assert r.status_code == 422, r.text
    assert "starts with '-' and could be read as an option" in r.text
    # A field that allows options takes them (and only its enum's).
    typed = {"n": 3, "x": 0.5, "mode": "fast", "name": "abc", "flag": "-v"}
    assert _result(server, _submit(server, "typed", typed))["argv"] == [
        "3",
        "0.5",
        "fast",
        "abc",
        "-v",
    ]


@pytest.mark.parametrize(
    "args,words",
    [
        ({"n": "three"}, "field n: expected an integer"),
        ({"n": True}, "field n: expected an integer"),
        ({"x": "nan"}, "field x: expected a finite number"),
        ({"mode": "slow"}, "field mode: 'slow' is not one of fast, exact"),
        ({"name": "ABC; rm"}, "does not match '[a-z]{1,8}'"),
        ({"flag": "--exec"}, "'--exec' is not one of -v, -q"),
        ({"n": -1}, "field n: value '-1' starts with '-'"),
    ],
)
def test_typed_fields_refuse_what_they_do_not_accept(
    server: Served, args: dict[str, Any], words: str
) -> None:
    full = {"n": 1, "x": 1.0, "mode": "fast", "name": "a", "flag": "-q", **args}
    r = _submit(server, "typed", full)
    assert r.status_code == 422 and words in r.text, r.text


def test_a_command_gets_a_private_directory_and_no_server_secrets(server: Served) -> None:
    seen = _result(server, _submit(server, "show", {"word": "x"}))
    assert seen["cwd"] != "/" and os.path.basename(seen["cwd"]).startswith("oomguard-cmd-")
    assert seen["cwd_mode"] == "0o700"
    assert not Path(seen["cwd"]).exists()  # removed after the attempt
    env = seen["env"]
    # (LC_CTYPE: Python's own locale coercion in the program, PEP 538)
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR", "LC_CTYPE"}, env
    assert env["HOME"] == seen["cwd"]
    assert "hunter2" not in json.dumps(env)
    # An explicit env is exactly that; an explicit cwd is used.
    typed = _result(
        server,
        _submit(server, "typed", {"n": 1, "x": 1.0, "mode": "fast", "name": "a", "flag": "-q"}),
    )
    assert {k: v for k, v in typed["env"].items() if k != "LC_CTYPE"} == {"ONLY": "this"}
    assert typed["cwd"] == str(server.store.parent)
    # A relative program path resolves in the private directory, never from "/".
    r = _submit(server, "relative", {})
    assert r.status_code == 201
    job_id = r.json()["job_id"]
    status = wait_for(
        lambda: (
            (s := httpx.get(f"{server.url}/v1/jobs/{job_id}").json())["state"]
            not in ("waiting", "running")
            and s
        ),
        timeout=60,
        interval=0.1,
    )
    assert status["state"] == "failed", status


@pytest.mark.parametrize(
    "entry,words",
    [
        ('x = ["sh", "-c", "{script}"]', "a {field} may not be code an interpreter runs"),
        ('x = ["python3", "-c", "{code}"]', "a {field} may not be code an interpreter runs"),
        ('x = ["bash", "-lc", "echo {word}"]', "a {field} may not be code an interpreter runs"),
        ('x = ["perl", "-e{code}"]', "a {field} may not be code an interpreter runs"),
        ('x = ["{prog}", "{arg}"]', "the program '{prog}' may not be a {field}"),
        ('x = "{prog} --flag"', "the program '{prog}' may not be a {field}"),
        ('[x]\nargv = ["/bin/echo", "{a}"]\ncwd = "relative/dir"', "is not an absolute path"),
        ('[x]\nargv = ["/bin/echo", "{a}"]\nfields.b = {type = "int"}', "b not used in argv"),
        ('[x]\nargv = ["/bin/echo", "{a}"]\nfields.a = {type = "date"}', "is not one of str"),
        ('[x]\nargv = ["/bin/echo"]\nshell = true', "unknown key(s) shell"),
    ],
)
def test_entries_that_would_run_anything_stop_serve(tmp_path: Path, entry: str, words: str) -> None:
    commands = tmp_path / "commands.toml"
    commands.write_text(entry + "\n")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "oomguard.cli.main",
            "serve",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--listen",
            "127.0.0.1:0",
            "--commands",
            str(commands),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == ExitCode.USAGE, res.stderr
    assert words in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "s.sqlite").exists()
