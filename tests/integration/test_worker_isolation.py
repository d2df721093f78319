"""Workers are started isolated from the caller's directory, and task files are loaded by
their path only: a module planted where oomguard is started, or beside a task file, is
never imported in its place. Real `oomguard serve` / `oomguard run` processes."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import ROOT
from fixtures.serve_process import serve
from oomguard.store.sqlite import SqliteStore

TESTS = ROOT / "tests"
#: a planted module: leaves a mark beside itself when imported
PLANTED = (
    "import pathlib\n"
    "pathlib.Path(__file__).resolve().parent.joinpath('PLANTED-RAN').write_text('ran')\n"
)


def plant(directory: Path, module: str) -> Path:
    """A module (or package, for ``name/``) ``module`` in ``directory``; its mark's path."""
    if module.endswith("/"):
        package = directory / module.rstrip("/")
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(PLANTED)
        return package / "PLANTED-RAN"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text(PLANTED)
    return directory / "PLANTED-RAN"


def test_serve_workers_never_import_from_its_directory(tmp_path: Path) -> None:
    # The directory `serve` was started from holds a planted oomguard package (before,
    # every worker imported it: `python -m` puts the working directory first). The server
    # itself is started with -P, as the `oomguard` command starts it.
    planted_in = tmp_path / "cwd"
    mark = plant(planted_in, "oomguard/")
    args = ("--workers", "1", "--tasks-module", "fixtures.tasks")
    # No empty entry in PYTHONPATH: it would mean "the working directory".
    env = {"PYTHONPATH": str(TESTS)}
    python = (sys.executable, "-P")
    with serve(tmp_path, *args, cwd=planted_in, python=python, env=env) as served:
        r = httpx.post(f"{served.url}/v1/jobs", json={"task": "fixtures.tasks:where_am_i"})
        assert r.status_code == 201, r.text
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 60
        while True:
            state = httpx.get(f"{served.url}/v1/jobs/{job_id}").json()["state"]
            if state not in ("waiting", "running"):
                break
            assert time.monotonic() < deadline, served.output()
            time.sleep(0.1)
        assert state == "succeeded", served.output()
        with SqliteStore(served.store) as store:
            ((*_, value),) = store.queries.result_rows(job_id)
        assert isinstance(value, bytes), value  # stored, not a missing blob
        where = pickle.loads(value)
    assert not mark.exists(), "the planted oomguard package ran in a worker"
    # The worker ran in "/", with neither its directory nor the server's on its path; the
    # task module came from PYTHONPATH (kept: -P, not -I).
    assert where["cwd"] == "/"
    assert str(planted_in) not in where["path"] and "" not in where["path"]


def oomguard_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI started as the `oomguard` command starts it (its directory not on sys.path)."""
    return subprocess.run(
        [sys.executable, "-P", "-m", "oomguard.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )


def test_task_file_directory_is_not_searched(tmp_path: Path) -> None:
    # A task file in a shared directory where someone planted pyarrow.py: before, loading
    # the file put its directory first on sys.path, and the scheduler imported the planted
    # module when it wrote the Parquet part.
    shared = tmp_path / "shared"
    mark = plant(shared, "pyarrow")
    (shared / "task.py").write_text("def double(x):\n    return {'y': 2 * x}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    params = elsewhere / "p.jsonl"
    params.write_text("".join(json.dumps({"x": i}) + "\n" for i in range(3)))
    done = oomguard_cli(
        "run",
        f"{shared}/task.py:double",
        "--params",
        str(params),
        "--store",
        str(elsewhere / "s.sqlite"),
        "--out",
        str(elsewhere / "out"),
        "--workers",
        "1",
        cwd=elsewhere,
    )
    assert not mark.exists(), "the planted pyarrow.py ran"
    assert done.returncode == 0, done.stderr
    assert list((elsewhere / "out" / "tasks").glob("part-*.parquet"))


def test_run_still_finds_modules_in_its_directory(tmp_path: Path) -> None:
    # `oomguard run mymodule:fn` from a project directory: its modules are searched after
    # everything installed, and tasks run there (relative paths work as before).
    (tmp_path / "mytasks.py").write_text(
        "import pathlib\n"
        "def touch(name):\n"
        "    pathlib.Path(name).write_text('here')\n"
        "    return {'ok': True}\n"
    )
    mark = plant(tmp_path, "json")  # never shadows the standard library's json
    params = tmp_path / "p.jsonl"
    params.write_text(json.dumps({"name": "made-by-task.txt"}) + "\n")
    done = oomguard_cli(
        "run",
        "mytasks:touch",
        "--params",
        str(params),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--workers",
        "1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "made-by-task.txt").read_text() == "here"
    assert not mark.exists()
