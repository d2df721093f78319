"""``oomguard run --log-format json``: every line on stderr is a JSON object; one per
attempt end and per job state change, with the documented keys."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import RunCli

pytestmark = pytest.mark.timeout(300)

ATTEMPT_KEYS = {
    "ts", "level", "logger", "event", "job_id", "task_id", "attempt_id", "attempt",
    "function", "outcome", "failure_class", "final_class", "message", "memory_key",
    "limit_bytes", "peak_bytes", "worker", "retry_at", "kernel_lines", "traceback", "evidence",
}  # fmt: skip
JOB_KEYS = {
    "ts", "level", "logger", "event", "job_id", "job_name", "namespace", "function", "state",
    "tasks", "counts", "failures_by_class",
}  # fmt: skip


def test_run_with_json_logs(tmp_path: Path, cli: RunCli) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text('{"message": "a"}\n{"message": "b"}\n')
    res = cli(
        "run",
        "oomguard.examples:fail",
        "--params",
        str(params),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--workers",
        "1",
        "--retries",
        "1",
        "--json",
        env={"OOMGUARD_LOG_FORMAT": "json"},
    )
    assert res.returncode == 1, res.stderr
    assert json.loads(res.stdout)["counts"]["failed"] == 2  # stdout is unchanged
    lines = [json.loads(line) for line in res.stderr.splitlines()]  # every line is JSON
    attempts = [line for line in lines if line["event"] == "attempt_ended"]
    jobs = [line for line in lines if line["event"] == "job_state"]
    assert all(set(line) == ATTEMPT_KEYS for line in attempts)
    assert all(set(line) == JOB_KEYS for line in jobs)
    assert Counter((a["outcome"], a["level"]) for a in attempts) == {
        ("retrying", "warning"): 2,
        ("failed", "error"): 2,
    }
    assert [(j["state"], j["level"]) for j in jobs] == [("running", "info"), ("failed", "error")]
    assert jobs[-1]["counts"]["failed"] == 2 and jobs[-1]["failures_by_class"] == {"error": 4}
    assert {line["event"] for line in lines} <= {"attempt_ended", "job_state", "log"}


def test_plain_logs_stay_the_default(tmp_path: Path, cli: RunCli) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text('{"x": 1}\n')
    res = cli(
        "run",
        "oomguard.examples:noop",
        "--params",
        str(params),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--workers",
        "1",
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith("oomguard: isolation ")
    assert "attempt_ended" not in res.stderr
