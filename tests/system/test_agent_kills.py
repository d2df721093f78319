"""The agent against the real kernel: processes in a memory cgroup made below the test's
own cgroup, named as a kubepods pod/container path would be, allocate past its limit; a
real ``oomguard agent`` subprocess reports each kill to a webhook and counts it on
/metrics, and its cursor makes a restart report a kill made while it was stopped, once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.receivers import Recorder
from oomguard.cgroups.locate import locate_memory_cgroup

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parent.parent.parent
MiB = 1024**2
LIMIT = 64 * MiB
# Waits for a line on stdin, then touches 256 MiB: killed at the 64 MiB limit.
ALLOCATE = (
    "import sys; sys.stdin.readline(); "
    "b = bytearray(256 * 1024 * 1024); "
    "[b.__setitem__(i, 1) for i in range(0, len(b), 4096)]"
)
# The container's init: starts a child that allocates when told, and lives on.
INIT = (
    "import subprocess, sys; sys.stdin.readline(); "
    f"subprocess.run([sys.executable, '-c', {ALLOCATE!r}], input=b'go\\n'); "
    "print('child done', flush=True); sys.stdin.readline()"
)


@dataclass
class PodCgroup:
    directory: Path  # the container's cgroup directory
    kernel_path: str  # as the kernel prints it
    pod_uid: str
    container_id: str
    dirs: list[Path]

    def add(self, pid: int) -> None:
        (self.directory / "cgroup.procs").write_text(str(pid))


@pytest.fixture
def pod_cgroup(require_cgroup: None) -> Iterator[PodCgroup]:
    version, own, mount, reason = locate_memory_cgroup()
    assert own is not None and mount is not None, reason
    pod_uid = str(uuid.uuid4())
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    dirs = [own / "kubepods", own / "kubepods/burstable", own / f"kubepods/burstable/pod{pod_uid}"]
    dirs.append(dirs[-1] / container_id)
    made: list[Path] = []
    try:
        for directory in dirs:
            if version == 2:
                try:
                    (directory.parent / "cgroup.subtree_control").write_text("+memory")
                except OSError as err:
                    pytest.skip(f"cannot enable the memory controller below {own}: {err}")
            directory.mkdir()
            made.append(directory)
        limit_file = "memory.max" if version == 2 else "memory.limit_in_bytes"
        (dirs[-1] / limit_file).write_text(str(LIMIT))
        yield PodCgroup(
            dirs[-1], "/" + str(dirs[-1].relative_to(mount)), pod_uid, container_id, dirs
        )
    finally:
        for directory in reversed(made):
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class AgentProcess:
    def __init__(self, tmp: Path, hook: Recorder, port: int) -> None:
        self.port = port
        self.stderr = (tmp / f"agent-{time.monotonic_ns()}.err").open("w+")
        env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "oomguard.cli.main",
                "agent",
                "--kernel-log",
                "kmsg",
                "--listen",
                f"127.0.0.1:{port}",
                "--notify-url",
                hook.url,
                "--state",
                str(tmp / "cursor.json"),
                "--lookback",
                "2m",
                "--rate-limit",
                "0s",
            ],
            stderr=self.stderr,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            health = self.get("/healthz")
            if health is not None and health.json()["lines_read"] > 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"the agent did not start: {self.log()}")

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)
        except httpx.HTTPError:
            return None

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.log()
        self.stderr.close()


def _notices(hook: Recorder, pod_uid: str) -> list[dict[str, Any]]:
    bodies = [r.json() for r in hook.requests]
    return [b for b in bodies if b.get("pod_uid") == pod_uid]


def _kill_alone(cgroup: PodCgroup) -> tuple[int, str, float]:
    """A process alone in the container (its init) allocates past the limit."""
    child = subprocess.Popen([sys.executable, "-c", ALLOCATE], stdin=subprocess.PIPE)
    cgroup.add(child.pid)
    comm = Path(f"/proc/{child.pid}/comm").read_text().strip()
    assert child.stdin is not None
    child.stdin.write(b"go\n")
    child.stdin.close()
    assert child.wait(60) == -signal.SIGKILL
    return child.pid, comm, time.monotonic()


def _wait_for(hook: Recorder, pod_uid: str, count: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _notices(hook, pod_uid)
        if len(found) >= count:
            return found
        time.sleep(0.02)
    return _notices(hook, pod_uid)


def _pod_counter(metrics: str, pod_uid: str) -> float:
    found = [
        float(m.group(1))
        for m in re.finditer(
            r'^oomguard_agent_oom_kills_total\{[^}]*pod="' + pod_uid + r'"[^}]*\} (\S+)$',
            metrics,
            re.M,
        )
    ]
    return sum(found)


def test_kills_in_a_pod_cgroup_are_reported_by_pod_and_counted(
    tmp_path: Path, pod_cgroup: PodCgroup
) -> None:
    uid = pod_cgroup.pod_uid
    with Recorder() as hook:
        agent = AgentProcess(tmp_path, hook, _free_port())
        try:
            pid, comm, killed_at = _kill_alone(pod_cgroup)
            notices = _wait_for(hook, uid, 1, 2.0)
            took = time.monotonic() - killed_at
            assert len(notices) == 1, (notices, agent.log())
            assert took < 2.0
            (notice,) = notices
            assert notice["event"] == "oom_kill"
            assert notice["container_id"] == pod_cgroup.container_id
            assert notice["victim_pid"] == pid and notice["command"] == comm
            assert notice["trigger"] == "cgroup"
            assert notice["trigger_cgroup"] == pod_cgroup.kernel_path
            assert notice["severity"] == "warning" and notice["qos"] == "burstable"
            assert notice["role"] == "init"
            assert any("Killed process" in line for line in notice["kernel_lines"])
            response = agent.get("/metrics")
            assert response is not None
            assert _pod_counter(response.text, uid) == 1

            # A child of the container's init killed: the container runs on.
            init = subprocess.Popen(
                [sys.executable, "-c", INIT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            pod_cgroup.add(init.pid)
            assert init.stdin is not None and init.stdout is not None
            init.stdin.write(b"go\n")
            init.stdin.flush()
            assert init.stdout.readline() == b"child done\n"
            notices = _wait_for(hook, uid, 2, 2.0)
            assert len(notices) == 2, agent.log()
            second = notices[1]
            assert second["victim_pid"] not in (pid, init.pid)
            assert second["role"] == "child"
            assert second["container_id"] == pod_cgroup.container_id
            init.stdin.write(b"bye\n")
            init.stdin.close()
            assert init.wait(30) == 0
            init.stdout.close()
            response = agent.get("/metrics")
            assert response is not None and _pod_counter(response.text, uid) == 2
        finally:
            agent.stop()

        # Stopped: a kill now is reported once by the next start, and by none after it.
        third, _, _ = _kill_alone(pod_cgroup)
        agent = AgentProcess(tmp_path, hook, _free_port())
        try:
            notices = _wait_for(hook, uid, 3, 10.0)
            assert [n["victim_pid"] for n in notices][2:] == [third], agent.log()
        finally:
            agent.stop()
        agent = AgentProcess(tmp_path, hook, _free_port())
        try:
            time.sleep(2.0)
            assert len(_notices(hook, uid)) == 3, agent.log()
            health = agent.get("/healthz")
            assert health is not None and health.json()["ok"] is True
        finally:
            agent.stop()
    state = json.loads((tmp_path / "cursor.json").read_text())
    assert isinstance(state["seq"], int)
