"""A job whose workers cannot import its task stops, with the real CLI and real workers
(the rules themselves: tests/unit/test_broken_jobs.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from conftest import run_cli
from oomguard.cli.exit_codes import ExitCode


def test_run_stops_a_job_whose_workers_cannot_import_its_task(tmp_path: Path) -> None:
    """The real CLI: a task file that starts a Runner at import. Every worker's import
    fails; the job stops after 3 attempts, in seconds, and `run` says why and exits 1."""
    (tmp_path / "script.py").write_text(
        "import oomguard\n\ndef f(x):\n    return x\n\n"
        "runner = oomguard.Runner(store='other.sqlite')\n"
    )
    params = tmp_path / "p.jsonl"
    params.write_text("".join(json.dumps({"x": i}) + "\n" for i in range(200)))
    res = run_cli(
        "run",
        "script.py:f",
        "--params",
        str(params),
        "--retries",
        "2",
        "--workers",
        "2",
        "--store",
        "s.sqlite",
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == int(ExitCode.TASKS_FAILED), res.stderr
    told = " ".join(line.strip() for line in res.stdout.splitlines())
    assert "the job stopped after its first 3 attempts all failed loading the task" in told
    assert 'if __name__ == "__main__":' in told
    assert "ERROR: job " in res.stderr
    db = sqlite3.connect(tmp_path / "s.sqlite")
    try:
        attempts = db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
        cancelled = db.execute("SELECT COUNT(*) FROM tasks WHERE state = 'cancelled'").fetchone()
    finally:
        db.close()
    assert attempts <= 8 and cancelled[0] >= 190
