"""Nothing a task starts outlives its attempt (worker/leftovers.py, worker/pool.py).

A real ``oomguard serve`` (or ``oomguard run``) runs tasks that leave a ``setsid`` daemon
behind (fixtures/daemons.py): a command, a Python task, one that holds memory so the next
smaller limit recycles its worker, one that kills its own worker; with cgroups and in
watchdog mode. Each daemon is gone once its attempt ended, the attempt's evidence says
``left_processes``, the server keeps serving, and no cgroup is left when it stops.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures import daemons
from fixtures.cli_process import own_memory_cgroup, worker_cgroups
from fixtures.polling import wait_for
from fixtures.serve_process import Served, serve

pytestmark = pytest.mark.timeout(300)
DAEMON = str(Path(daemons.__file__).resolve())


@pytest.fixture
def pid_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "daemons.txt"
    yield path
    daemons.kill_all(path)  # only if the test failed: what it checks is that none is left


def _commands(tmp_path: Path) -> Path:
    path = tmp_path / "commands.toml"
    daemon = [sys.executable, DAEMON, "{pid_file}"]
    path.write_text(
        f"daemon = {json.dumps(daemon)}\n"
        f"daemon_keeps_stdout = {json.dumps([*daemon, 'keep-stdout'])}\n"
        f"echo = {json.dumps([sys.executable, '-c', 'print(1)'])}\n"
    )
    return path


def _submit(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{served.url}/v1/jobs", json=body, timeout=30)
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]

    def finished() -> dict[str, Any] | None:
        assert served.proc.poll() is None, served.output()
        status: dict[str, Any] = httpx.get(f"{served.url}/v1/jobs/{job_id}").json()
        return status if status["state"] not in ("waiting", "running") else None

    done: dict[str, Any] = wait_for(finished, timeout=120, interval=0.1)
    return done


def _evidence(store: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT evidence FROM attempts ORDER BY id").fetchall()
    finally:
        db.close()
    return [json.loads(r[0]) if r[0] else {} for r in rows]


def _none_left(pid_file: Path, expected: int) -> None:
    found = wait_for(lambda: len(daemons.daemons(pid_file)) >= expected or None, timeout=30)
    assert found
    wait_for(lambda: not any(daemons.alive(d) for d in daemons.daemons(pid_file)), timeout=10)


def _metric(served: Served, name: str, label: str) -> float:
    text = httpx.get(f"{served.url}/metrics").text
    match = re.search(rf'^{name}\{{[a-z]+="{label}"\}} ([0-9.]+)$', text, re.M)
    assert match, f"no {name}{{{label}}} in /metrics:\n{text}"
    return float(match.group(1))


def test_a_daemonising_command_under_recycling_leaves_nothing_and_the_server_serves(
    tmp_path: Path, pid_file: Path, require_cgroup: None
) -> None:
    with serve(
        tmp_path,
        "--workers",
        "1",
        "--max-tasks-per-worker",
        "1",
        "--commands",
        str(_commands(tmp_path)),
    ) as served:
        own = own_memory_cgroup(served.pid)
        status = _submit(served, {"command": "daemon", "tasks": [{"pid_file": str(pid_file)}] * 3})
        assert status["counts"]["succeeded"] == 3, (status, served.output())
        _none_left(pid_file, 3)
        # A daemon that keeps the program's stdout open does not hold the attempt either:
        # the attempt ends while its daemon (a 60 s sleep) lives, and the daemon is then
        # swept as its leftover (left_processes >= 1, checked below for every attempt).
        status = _submit(
            served, {"command": "daemon_keeps_stdout", "args": {"pid_file": str(pid_file)}}
        )
        assert status["counts"]["succeeded"] == 1, status
        _none_left(pid_file, 4)
        # Each attempt says what it left; the server goes on serving.
        left = [e.get("left_processes", 0) for e in _evidence(served.store)]
        assert len(left) == 4 and all(n >= 1 for n in left), left
        assert _submit(served, {"command": "echo"})["counts"]["succeeded"] == 1
        assert _metric(served, "oomguard_worker_leftovers_total", "cgroups_not_removed") == 0
        assert served.proc.poll() is None
        pid = served.pid
    assert served.proc.returncode == 0, served.output()
    assert own is not None and worker_cgroups(own, pid) == []


def test_limit_change_and_worker_death_leave_nothing(
    tmp_path: Path, pid_file: Path, require_cgroup: None
) -> None:
    task = "fixtures.daemons:daemonize"
    with serve(
        tmp_path, "--workers", "1", "--tasks-module", "fixtures.daemons", "--worker-memory", "1GiB"
    ) as served:
        own = own_memory_cgroup(served.pid)
        # 200 MiB stay in the worker: the next job's 64 MiB limit cannot be set on it
        # (v1 refuses with EBUSY; v2 OOM-kills it), so it is replaced.
        big = _submit(
            served,
            {
                "task": task,
                "memory": "512MiB",
                "retries": 0,
                "args": {"pid_file": str(pid_file), "hold_mib": 200},
            },
        )
        assert big["counts"]["succeeded"] == 1, (big, served.output())
        small = _submit(
            served,
            {
                "task": "fixtures.daemons:small_daemon",
                "memory": "64MiB",
                "retries": 0,
                "args": {"pid_file": str(pid_file)},
            },
        )
        assert small["counts"]["succeeded"] == 1, small
        # A task that leaves a daemon and kills its own worker.
        died = _submit(
            served, {"task": task, "retries": 0, "args": {"pid_file": str(pid_file), "die": True}}
        )
        assert died["counts"]["failed"] == 1, died
        _none_left(pid_file, 3)
        assert _metric(served, "oomguard_worker_recycles_total", "limit_change") == 1
        assert _metric(served, "oomguard_worker_leftovers_total", "cgroups_not_removed") == 0
        assert (
            _submit(served, {"task": task, "args": {"pid_file": str(pid_file)}})["counts"][
                "succeeded"
            ]
            == 1
        )
        _none_left(pid_file, 4)
        pid = served.pid
    assert served.proc.returncode == 0, served.output()
    assert own is not None and worker_cgroups(own, pid) == []


def test_watchdog_mode_collects_daemons_of_commands_and_of_dead_workers(
    tmp_path: Path, pid_file: Path
) -> None:
    with serve(
        tmp_path,
        "--workers",
        "1",
        "--isolation",
        "watchdog",
        "--tasks-module",
        "fixtures.daemons",
        "--commands",
        str(_commands(tmp_path)),
    ) as served:
        status = _submit(served, {"command": "daemon", "tasks": [{"pid_file": str(pid_file)}] * 2})
        assert status["counts"]["succeeded"] == 2, (status, served.output())
        _none_left(pid_file, 2)
        assert all(e.get("left_processes", 0) >= 1 for e in _evidence(served.store))
        # The worker dies: no subreaper is left, the daemon carries the worker's mark.
        died = _submit(
            served,
            {
                "task": "fixtures.daemons:daemonize",
                "retries": 0,
                "args": {"pid_file": str(pid_file), "die": True},
            },
        )
        assert died["counts"]["failed"] == 1, died
        _none_left(pid_file, 3)
        assert _metric(served, "oomguard_worker_leftovers_total", "processes_killed") >= 1
        assert _submit(served, {"command": "echo"})["counts"]["succeeded"] == 1
    assert served.proc.returncode == 0, served.output()


def test_run_cmd_with_a_daemon_exits_and_leaves_nothing(
    tmp_path: Path, pid_file: Path, cli: Any
) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text('{"i": 0}\n{"i": 1}\n')
    store = tmp_path / "s.sqlite"
    res = cli(
        "run",
        "--cmd",
        f"{sys.executable} {DAEMON} {pid_file}",
        "--params",
        str(params),
        "--store",
        str(store),
        "--workers",
        "1",
        "--max-tasks-per-worker",
        "1",
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    _none_left(pid_file, 2)
    assert [e.get("left_processes", 0) >= 1 for e in _evidence(store)] == [True, True]
