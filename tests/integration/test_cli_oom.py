"""`oomguard oom ...` in a subprocess, and a real kernel OOM kill read back live."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomguard.cli.exit_codes import ExitCode
from oomguard.kernlog import JSON_KEYS, KernelLogFollower, OomEvent, OomLogParser

OOMGUARD = Path(sys.executable).with_name("oomguard")
CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "oom_reports"
SEED = CORPUS / "seed_python_two_kills_6.1.log"


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOMGUARD_")}
    return subprocess.run(
        [str(OOMGUARD), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_events_from_file_as_json_lines() -> None:
    done = run_cli("oom", "events", "--source", str(SEED), "--json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["victim_pid"] for r in records] == [2193190, 2193819]
    assert all(tuple(r) == JSON_KEYS for r in records)


def test_events_from_stdin_human_readable() -> None:
    done = run_cli("oom", "events", "--source", "-", stdin=SEED.read_text())
    assert done.returncode == 0, done.stderr
    header = [x for x in done.stdout.splitlines() if x.startswith("# ")]
    lines = [x for x in done.stdout.splitlines() if not x.startswith("# ")]
    assert header[0].startswith("# [seconds since boot] clock time")
    assert any("not reaped: no such line" in x for x in header)  # what "not reaped" means
    assert len(lines) == 2
    assert "killed 2193819 (python3.13)" in lines[1] and "global" in lines[1]
    # A log from elsewhere has no clock time: its stamps are another boot's uptime.
    assert lines[1].split("]")[1].split()[0] in ("global", "memcg")


def test_events_source_from_environment() -> None:
    env = {**os.environ, "OOMGUARD_OOM_SOURCE": str(SEED), "OOMGUARD_OOM_JSON": "1"}
    done = subprocess.run(
        [str(OOMGUARD), "oom", "events"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    assert "OOMGUARD_OOM_SOURCE" in run_cli("oom", "events", "--help").stdout


def test_missing_file_is_a_clear_error() -> None:
    done = run_cli("oom", "events", "--source", "/nonexistent/kern.log")
    assert done.returncode == ExitCode.UNAVAILABLE
    assert done.stderr.strip().count("\n") == 0
    assert "cannot read /nonexistent/kern.log" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_since_is_a_usage_error() -> None:
    done = run_cli("oom", "events", "--source", str(SEED), "--since", "soon")
    assert done.returncode == ExitCode.USAGE
    assert "invalid duration" in done.stderr and "Traceback" not in done.stderr


def test_since_filters_by_uptime(tmp_path: Path) -> None:
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    log = tmp_path / "k.log"
    log.write_text(
        "[    0.000001] Out of memory: Killed process 1 (old) total-vm:1kB\n"
        f"[{uptime:.6f}] Out of memory: Killed process 2 (new) total-vm:1kB\n"
    )
    # Half the uptime back: the boot-time kill is older, the one stamped now is not.
    since = f"{max(uptime / 2, 1):.0f}s"
    done = run_cli("oom", "events", "--source", str(log), "--since", since, "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(x)["victim_pid"] for x in done.stdout.splitlines()] == [2]


def test_tree_json_and_text() -> None:
    done = run_cli("oom", "tree", "--json")
    assert done.returncode == 0, done.stderr
    procs = json.loads(done.stdout)
    assert any(p["pid"] == os.getpid() for p in procs)
    assert sum(p["likely_victim"] for p in procs) == 1  # the kernel's first choice
    text = run_cli("oom", "tree", "--extended")
    assert text.returncode == 0
    assert text.stdout.startswith("# [pid] command: oom_score (oom_score_adj)")
    assert text.stdout.count("<- the OOM killer's first choice") == 1


# ---------------------------------------------------------------------------------------
# A real kill: a child allocates past a 64 MiB memory cgroup limit.

_CHILD = """
import sys
with open(sys.argv[1], "w") as f:
    f.write("0")  # move this process into the limited cgroup
sys.stdout.write("in\\n"); sys.stdout.flush()
b = bytearray(512 * 1024 * 1024)
for i in range(0, len(b), 4096):
    b[i] = 1
"""


def _own_memory_cgroup() -> tuple[Path, str] | None:
    """(directory to create the test cgroup in, limit file name), or None."""
    text = Path("/proc/self/cgroup").read_text()
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory" + path), "memory.limit_in_bytes"
    for line in text.splitlines():
        if line.startswith("0::"):
            base = Path("/sys/fs/cgroup" + line[3:])
            controllers_file = base / "cgroup.subtree_control"
            if controllers_file.exists() and "memory" in controllers_file.read_text().split():
                return base, "memory.max"
    return None


def _cgroup_or_skip() -> tuple[Path, str]:
    required = os.environ.get("OOMGUARD_REQUIRE_CGROUP") == "1"
    reason = None
    found = _own_memory_cgroup()
    if os.geteuid() != 0:
        reason = "needs root to create a memory cgroup"
    elif found is None or not os.access(found[0], os.W_OK):
        reason = "no writable memory cgroup below this process's own"
    elif not os.access("/dev/kmsg", os.R_OK):
        reason = "/dev/kmsg is not readable"
    if reason is not None:
        if required:
            pytest.fail(f"OOMGUARD_REQUIRE_CGROUP=1 but {reason}")
        pytest.skip(reason)
    assert found is not None
    return found


def test_real_oom_kill_is_found_in_kmsg() -> None:
    parent, limit_file = _cgroup_or_skip()
    cgroup = parent / f"oomguard-kernlog-test-{os.getpid()}"
    cgroup.mkdir()
    child: subprocess.Popen[str] | None = None
    follower = KernelLogFollower()
    try:
        (cgroup / limit_file).write_text(str(64 * 1024 * 1024))
        follower.open()  # from now on: only the records this test causes
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(cgroup / "cgroup.procs")],
            stdout=subprocess.PIPE,
            text=True,
        )
        returncode = child.wait(timeout=60)
        assert returncode == -9, f"child was not SIGKILLed (returncode {returncode})"
        parser = OomLogParser()
        found: OomEvent | None = None
        deadline = time.monotonic() + 3.0
        while found is None and time.monotonic() < deadline:
            for line in follower.read_new():
                parser.feed(line)
            found = next((e for e in parser.pending() if e.victim_pid == child.pid), None)
            if found is None:
                time.sleep(0.05)
        assert found is not None, "no OOM event with the child's pid within 3 s"
        assert found.oom_type == "memcg"
        assert found.oom_memcg is not None and found.oom_memcg.endswith(cgroup.name)
        assert found.anon_rss_kb is not None and found.anon_rss_kb > 32 * 1024
        assert found.timestamp is not None
    finally:
        follower.close()
        if child is not None:
            if child.poll() is None:
                child.kill()  # by its own pid, never by name
            child.wait(timeout=30)
            if child.stdout is not None:
                child.stdout.close()
        for _ in range(50):
            try:
                cgroup.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        assert not cgroup.exists(), f"could not remove {cgroup}"
