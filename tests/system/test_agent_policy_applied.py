"""The agent's OOM policy on real processes in a memory cgroup made below the test's own:
processes that appear after the agent started get their oom_score_adj; --dry-run changes
nothing; a value the kernel refuses (lowering below 0 without CAP_SYS_RESOURCE, refused
here) is reported and the agent keeps running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from oomguard.cgroups.locate import locate_memory_cgroup

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent.parent
SLEEPER = "import sys; sys.stdin.readline()"


@pytest.fixture
def cgroup(require_cgroup: None) -> Iterator[tuple[Path, str]]:
    _version, own, mount, reason = locate_memory_cgroup()
    assert own is not None and mount is not None, reason
    name = f"agent-policy-{uuid.uuid4().hex[:8]}"
    directory = own / name
    directory.mkdir()
    try:
        yield directory, name
    finally:
        for pid in (directory / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            try:
                directory.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def _sleeper(directory: Path, procs: list[subprocess.Popen[bytes]]) -> int:
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER], stdin=subprocess.PIPE)
    procs.append(proc)
    (directory / "cgroup.procs").write_text(str(proc.pid))
    return proc.pid


def _agent(tmp: Path, policy: Path, *extra: str) -> subprocess.Popen[str]:
    """A started agent (its /healthz answers: its signal handlers are in place)."""
    (tmp / "empty.log").touch()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oomguard.cli.main",
            "agent",
            "--kernel-log",
            str(tmp / "empty.log"),
            "--policy",
            str(policy),
            "--policy-interval",
            "0.2s",
            "--listen",
            f"127.0.0.1:{port}",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "tests")),
    )

    def up() -> bool:
        assert agent.poll() is None, agent.communicate()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    assert _wait(up, 60)
    return agent


def _wait(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _stop(agent: subprocess.Popen[str]) -> tuple[str, str]:
    agent.send_signal(signal.SIGTERM)
    out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    return out, err


def test_new_processes_get_the_adj_and_a_refused_value_is_reported(
    tmp_path: Path, cgroup: tuple[Path, str]
) -> None:
    directory, name = cgroup
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[[oom_score_adj]]\n"
        f'cgroup = "*/{name}"\ncommand = "sleep"\nvalue = -500\n\n'
        "[[oom_score_adj]]\n"
        f'cgroup = "*/{name}"\nvalue = 900\n'
    )
    procs: list[subprocess.Popen[bytes]] = []
    agent = _agent(tmp_path, policy)
    try:
        first = _sleeper(directory, procs)
        assert _wait(lambda: _adj(first) == 900), "not applied to a new process"
        # "sleep" is to go below 0: the kernel refuses without CAP_SYS_RESOURCE.
        refused = subprocess.Popen(["sleep", "60"])
        (directory / "cgroup.procs").write_text(str(refused.pid))
        second = _sleeper(directory, procs)
        assert _wait(lambda: _adj(second) == 900), "the agent stopped after a refusal"
        assert _adj(refused.pid) == 0
        assert agent.poll() is None
    finally:
        _out, err = _stop(agent)
        _end(procs)
        refused.kill()
        refused.wait()
    assert f"set oom_score_adj of pid {first} (python" in err
    assert f"could not set oom_score_adj of pid {refused.pid} (sleep)" in err
    assert "CAP_SYS_RESOURCE" in err
    assert err.count(f"pid {refused.pid} (sleep)") == 1  # reported once, not every pass


def test_dry_run_prints_and_changes_nothing(tmp_path: Path, cgroup: tuple[Path, str]) -> None:
    directory, name = cgroup
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[[oom_score_adj]]\ncgroup = "*/{name}"\nvalue = 700\n')
    procs: list[subprocess.Popen[bytes]] = []
    before = _sleeper(directory, procs)
    agent = _agent(tmp_path, policy, "--dry-run")
    try:
        after = _sleeper(directory, procs)
        time.sleep(1.5)
        assert (_adj(before), _adj(after)) == (0, 0)
    finally:
        out, _err = _stop(agent)
        _end(procs)
    assert f"would set oom_score_adj of pid {before} (python" in out
    assert f"would set oom_score_adj of pid {after} (python" in out
    assert out.count("from 0 to 700") == 2  # each once, not every pass


def _end(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
