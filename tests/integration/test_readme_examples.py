"""The README's examples run as written: its Python example as a script (with its
``__main__`` guard, and without it: a job that fails fast and says why), and the shell
examples marked ``<!-- doctest -->`` in README.md and the guide (docs/guide/*.md), each
run by bash in a fresh directory.

The examples are read from the documents themselves, so the documents and the test cannot
drift: the guide's copy of the Python example (docs/guide/running.md) must be the README's.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide"
#: the documents whose doctest-marked shell examples run here
DOCUMENTS = [README, *sorted(GUIDE.glob("*.md"))]
GUARD = 'if __name__ == "__main__":'


def python_example(document: Path = README) -> str:
    """The document's Python example (the block that starts a Runner)."""
    blocks: list[str] = re.findall(r"```python\n(.*?)```", document.read_text(), re.S)
    (found,) = [b for b in blocks if "oomguard.Runner(" in b and GUARD in b]
    return found


def without_guard(source: str) -> str:
    """The example as a new user first wrote it: the guarded block at top level."""
    head, _, body = source.partition(GUARD + "\n")
    assert body, "the README's example has no __main__ guard"
    return head + textwrap.dedent(body)


def shell_examples(documents: list[Path] = DOCUMENTS) -> list[str]:
    """The bash blocks marked ``<!-- doctest -->`` just before them, each block once (the
    guide repeats some of the README's)."""
    blocks: dict[str, None] = {}
    for document in documents:
        for block in re.findall(r"<!-- doctest -->\n```bash\n(.*?)```", document.read_text(), re.S):
            blocks.setdefault(block)
    return list(blocks)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # `oomguard` on PATH, as after `. .venv/bin/activate` (the README's install step).
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _run_script(path: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def test_python_example_without_guard_fails_fast_and_stops_the_job(tmp_path: Path) -> None:
    script = tmp_path / "sweep_readme.py"
    script.write_text(without_guard(python_example()))
    proc = _run_script(script, timeout=120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    # One clear message naming the fix, as the last line of the traceback.
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("oomguard.errors.JobStoppedError: job "), proc.stderr[-2000:]
    assert GUARD in last and "MainGuardError" in last and str(script) in last
    # The job stopped: failed, its attempts few, every other task cancelled with the cause.
    db = sqlite3.connect(tmp_path / "sweep.sqlite")
    try:
        (state,) = db.execute("SELECT state FROM jobs WHERE name = 'sweep-1'").fetchone()
        assert state == "stopped"
        attempts = db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
        assert 3 <= attempts <= 8  # the 3 that stop it, and those already in flight
        states = dict(db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall())
        assert not set(states) - {"failed", "cancelled"}, states
        assert states.get("cancelled", 0) > 0
        (error,) = db.execute(
            "SELECT error FROM tasks WHERE state = 'cancelled' LIMIT 1"
        ).fetchone()
        assert (
            error.startswith("not run: the job stopped after its first 3 attempts")
            and GUARD in error
        )
    finally:
        db.close()

    # `oomguard status` says the job failed and why.
    status = subprocess.run(
        [sys.executable, "-m", "oomguard.cli.main", "status", "--store", "sweep.sqlite"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert status.returncode == 0, status.stderr
    assert ": failed" in status.stdout.splitlines()[0]
    told = " ".join(line.strip() for line in status.stdout.splitlines())  # wrapped lines
    assert "the job stopped after its first 3 attempts" in told and GUARD in told

    # Fixed (the guard put back), the same sweep resumes the stopped job and finishes it.
    script.write_text(python_example())
    proc = _run_script(script, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "state='succeeded'" in proc.stdout  # print(job.status()): a JobStatus
    db = sqlite3.connect(tmp_path / "sweep.sqlite")
    try:
        assert db.execute("SELECT COUNT(*) FROM jobs WHERE name = 'sweep-1'").fetchone()[0] == 1
        states = dict(
            db.execute(
                "SELECT t.state, COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id "
                "WHERE j.name = 'sweep-1' GROUP BY t.state"
            ).fetchall()
        )
        assert states == {"succeeded": 20 * 3 + 20}, states
    finally:
        db.close()


def test_python_example_with_guard_succeeds(tmp_path: Path) -> None:
    import pyarrow.dataset as ds

    script = tmp_path / "sweep.py"
    script.write_text(python_example())
    proc = _run_script(script, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "state='succeeded'" in proc.stdout  # print(job.status()): a JobStatus
    assert "'succeeded': 1, 'failed': 0" in proc.stdout  # the single call
    tasks = ds.dataset(tmp_path / "results" / "tasks").to_table()
    assert tasks.num_rows == 60
    assert sorted(set(tasks.column("alive").to_pylist())) == list(range(100, 2_100, 100))
    aggregates = ds.dataset(tmp_path / "results" / "aggregates").to_table()
    assert aggregates.num_rows == 20


@pytest.mark.parametrize("index", range(len(shell_examples())))
def test_readme_shell_example_runs_as_written(index: int, tmp_path: Path) -> None:
    block = shell_examples()[index]
    # Examples name files of the repository's examples/ folder, as from a checkout.
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert proc.returncode == 0, f"{block}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def test_the_guide_shows_the_readmes_python_example() -> None:
    assert python_example(GUIDE / "running.md") == python_example(README)


def test_the_readme_marks_its_shell_examples() -> None:
    blocks = shell_examples([README])
    assert len(blocks) >= 2
    assert any("oomguard run oomguard.examples:simulate" in b for b in blocks)
    assert any("oomguard run examples/study.toml" in b for b in blocks)
