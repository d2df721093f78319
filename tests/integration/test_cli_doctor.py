"""``oomguard doctor`` and ``oomguard oom cgroup`` in a subprocess on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from oomguard.cli.exit_codes import ExitCode

MAIN = [sys.executable, "-m", "oomguard.cli.main"]
CGROUP_CMD = [*MAIN, "oom", "cgroup"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOMGUARD_")}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


def test_doctor_json_on_this_machine() -> None:
    done = _run([*MAIN, "doctor", "--json"])
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) >= {"isolation", "findings"}
    assert set(data["isolation"]) == {
        "mode",
        "reason",
        "own_cgroup",
        "own_limit_bytes",
        "own_oom_group",
        "warnings",
    }
    names = {f["name"] for f in data["findings"]}
    assert {
        "isolation",
        "kernel_log",
        "oom_score_adj_raise",
        "oom_score_adj_lower",
        "overcommit",
        "swap",
        "psi",
        "memory",
        "oom_group",
    } <= names
    for finding in data["findings"]:
        assert set(finding) == {"name", "status", "found", "action"}
        assert finding["status"] in ("ok", "warn", "error")
    if os.geteuid() == 0 and os.path.isdir("/sys/fs/cgroup/memory"):
        assert data["isolation"]["mode"] == "cgroup-v1"  # this machine: hybrid, v1 memory


def test_doctor_human_output_and_a_budget_larger_than_the_machine() -> None:
    done = _run([*MAIN, "doctor"])
    assert done.returncode == 0, done.stderr
    assert "isolation:" in done.stdout and "kernel_log" in done.stdout
    done = _run([*MAIN, "doctor", "--memory-budget", "100TiB"])
    assert done.returncode == ExitCode.DOCTOR_FAILED
    assert "larger than this machine's memory" in done.stdout
    done = _run([*MAIN, "doctor", "--memory-budget", "lots"])
    assert done.returncode == ExitCode.USAGE
    assert "invalid memory size" in done.stderr and "Traceback" not in done.stderr


def test_oom_cgroup_of_this_process_and_of_a_pid() -> None:
    done = _run([*CGROUP_CMD, "--json"])
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) >= {"version", "levels", "hits_first", "machine_memory_bytes"}
    assert data["levels"][-1]["path"] == "/"
    done = _run([*CGROUP_CMD, str(os.getpid())])
    assert done.returncode == 0, done.stderr
    assert "hits first:" in done.stdout
    done = _run([*CGROUP_CMD, "/no/such/cgroup"])
    assert done.returncode == ExitCode.NOT_FOUND
