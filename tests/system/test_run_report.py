"""The end of `oomguard run` says what failed and why (the real CLI, a real kernel OOM kill
in a worker's memory cgroup): failed tasks grouped by class and key, with the limit, the
peak, the kernel's whole `Killed process` line and the option to change; `status` prints
the same; command tasks are shown by their command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from oomguard.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from conftest import RunCli

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]


def _joined(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines())  # the report wraps lines


def test_run_ends_with_the_failures_grouped_with_their_evidence(
    require_cgroup: None, cli: RunCli, tmp_path: Path
) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text("".join(json.dumps({"mib": m}) + "\n" for m in (8, 300, 300, 320)))
    res = cli(
        "run",
        "oomguard.examples:allocate",
        "--params",
        str(params),
        "--memory-key",
        "mib",
        "--worker-memory",
        "128MiB",
        "--workers",
        "2",
        "--store",
        "s.sqlite",
        cwd=tmp_path,
    )
    assert res.returncode == int(ExitCode.TASKS_FAILED), res.stderr
    out = res.stdout
    assert out.splitlines()[0].endswith(": failed"), out
    assert "tasks: 4 of 4 finished: succeeded 1, failed 3" in out
    assert "failed for good: 3 tasks, by class and key:" in out
    # One group per key, its tasks counted together; the limit, the peak, the kernel line.
    assert "    needs_more_memory, mib=300: 2 tasks (oomguard.examples:allocate; task " in out
    assert "    needs_more_memory, mib=320: 1 task (oomguard.examples:allocate; task " in out
    assert "last attempt (" in out and "limit 128MiB, peak 128MiB" in out
    kernel = [line for line in out.splitlines() if line.strip().startswith("kernel: ")]
    assert kernel, out
    joined = _joined(out)
    assert "Killed process" in joined and "oom_score_adj:" in joined  # whole, not cut
    assert all(len(line) <= 100 for line in out.splitlines() if "kernel" in line)
    assert (
        "to change: give it more memory: --worker-memory (each task's most; now 128MiB)" in joined
    )
    assert "next: oomguard status" in out and "oomguard ui --store s.sqlite" in out
    # `status` tells the same (one renderer).
    status = cli("status", "--store", "s.sqlite", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    report = out[: out.index("next: ")]
    assert status.stdout == report


def test_a_command_task_is_shown_by_its_command_line(cli: RunCli, tmp_path: Path) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text(json.dumps({"word": "luck"}) + "\n")
    cmd = f"{sys.executable} -c 'import sys; sys.exit(\"no \" + sys.argv[1])' {{word}}"
    res = cli("run", "--cmd", cmd, "--params", str(params), "--store", "s.sqlite", cwd=tmp_path)
    assert res.returncode == int(ExitCode.TASKS_FAILED), res.stderr
    assert "cmd:" not in res.stdout and "cmd:[" not in res.stdout
    assert f"{sys.executable} -c" in _joined(res.stdout)
    assert "command exited with status 1; stderr: no luck" in _joined(res.stdout)
