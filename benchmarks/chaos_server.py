"""Chaos against a server: does one task ever stop ``oomguard serve``, lose a task, or leave
a process or a memory cgroup behind?

Question: a real ``oomguard serve`` (memory cgroups, ``--max-tasks-per-worker 2``,
``--worker-memory 256MiB``) gets rounds of jobs of declared commands mixed at random:
programs that double-fork a ``setsid`` daemon and return (keeping stdout open or not),
programs OOM-killed at the worker's limit, programs that crash (SIGSEGV, SIGKILL, exit 3)
and normal ones. Counted: server deaths (it must answer /healthz all along and exit 0 on
SIGTERM), tasks lost (submitted but not ended succeeded or failed, or failed ``lost``),
failures whose class is not the kind's, daemons still alive after their job, memory
cgroups and processes of the server left after it stopped.

Command (about a minute on 2 cores; needs root and a writable memory cgroup):

    .venv/bin/python benchmarks/chaos_server.py --rounds 10 --tasks 12 --seed 1

Prints a table and the final ``JSON: {...}`` line; exits 1 if any count that must be 0 is
not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from _common import emit, table
from chaos_check import cgroup_dirs, own_memory_cgroup

DAEMON = r"""
import os, sys, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork():
        os._exit(0)
    st = open("/proc/self/stat").read()
    start = st[st.rfind(")") + 2:].split()[19]
    open(sys.argv[1], "a").write(f"{os.getpid()} {start}\n")
    os.write(w, b"1")
    if sys.argv[2] == "close":
        for fd in (0, 1, 2):
            os.close(fd)
    time.sleep(120)
    os._exit(0)
os.read(r, 1)
print('{"daemon": true}')
"""
#: kind -> (command name, the failure classes it may end with; None: succeeded)
KINDS: dict[str, tuple[str, tuple[str | None, ...]]] = {
    "daemon": ("daemon", (None,)),
    "daemon_open": ("daemon_open", (None,)),
    "oom": ("oom", ("oom_cgroup", "needs_more_memory")),
    "segv": ("segv", ("error",)),
    "sigkill": ("sigkill", ("error",)),
    "exit3": ("exit3", ("error",)),
    "normal": ("normal", (None,)),
}


def commands(directory: Path) -> Path:
    py = sys.executable
    daemon = directory / "daemon.py"
    daemon.write_text(DAEMON)
    entries = {
        "daemon": [py, str(daemon), "{pid_file}", "close"],
        "daemon_open": [py, str(daemon), "{pid_file}", "open"],
        "oom": [py, "-c", "b = bytearray(1 << 30); print(len(b))"],
        "segv": [py, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
        "sigkill": [py, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        "exit3": [py, "-c", "import sys; sys.exit(3)"],
        "normal": [py, "-c", "print(1)"],
    }
    path = directory / "commands.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in entries.items()))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int, start: str) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    rest = text[text.rfind(")") + 2 :].split()
    return rest[0] not in ("Z", "X") and rest[19] == start


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
                found.extend(int(k) for k in kids)
                todo.extend(int(k) for k in kids)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=12, help="tasks per round (one job)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="oomguard-chaos-server-"))
    pid_file = work / "daemons.txt"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    own = own_memory_cgroup()
    before = cgroup_dirs(own)
    log = open(work / "serve.log", "wb")  # noqa: SIM115 - closed at the end
    server = subprocess.Popen(
        [sys.executable, "-m", "oomguard.cli.main", "serve", "--store", str(work / "s.db"),
         "--listen", f"127.0.0.1:{port}", "--workers", str(args.workers),
         "--worker-memory", "256MiB", "--max-tasks-per-worker", "2", "--retries", "1",
         "--timeout", "60", "--commands", str(commands(work))],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work)
    counts: Counter[str] = Counter()
    wrong: list[str] = []
    submitted = ended = lost = server_deaths = 0
    t0 = time.monotonic()
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise SystemExit(f"serve exited {server.returncode}: see {work}/serve.log")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("serve did not start")
            time.sleep(0.1)
        for _ in range(args.rounds):
            kinds = [rng.choice(list(KINDS)) for _ in range(args.tasks)]
            jobs = []
            for kind in kinds:
                name, _expected = KINDS[kind]
                r = httpx.post(f"{url}/v1/jobs", timeout=30, json={
                    "command": name, "args": {"pid_file": str(pid_file)}
                    if kind.startswith("daemon") else {}, "memory": "64MiB"})
                if r.status_code != 201:
                    wrong.append(f"{kind}: submission {r.status_code} {r.text[:200]}")
                    continue
                jobs.append((kind, r.json()["job_id"]))
                submitted += 1
                counts[kind] += 1
            for kind, job_id in jobs:
                expected = KINDS[kind][1]
                end = time.monotonic() + 180
                while True:
                    if server.poll() is not None:
                        server_deaths += 1
                        raise SystemExit(f"serve died: exit {server.returncode}")
                    status = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
                    if status["state"] not in ("waiting", "running"):
                        break
                    if time.monotonic() > end:
                        lost += 1
                        wrong.append(f"{kind}: job {job_id} still {status['state']}")
                        break
                    time.sleep(0.05)
                ended += 1
                classes = status.get("failures_by_class") or {}
                got = next(iter(classes), None) if status["counts"]["failed"] else None
                if got == "lost":
                    lost += 1
                if got not in expected:
                    wrong.append(f"{kind}: expected {expected}, got {got} ({status['counts']})")
            if httpx.get(f"{url}/healthz", timeout=5).status_code != 200:
                server_deaths += 1
        daemons = [line.split() for line in pid_file.read_text().splitlines()] \
            if pid_file.exists() else []
        time.sleep(0.5)
        daemons_alive = sum(alive(int(p), s) for p, s in daemons)
        workers = descendants(server.pid)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
        log.close()
    wall = time.monotonic() - t0
    if code != 0:
        server_deaths += 1
    left_cgroups = sorted(cgroup_dirs(own) - before)
    left_procs = [p for p in workers if Path(f"/proc/{p}").exists()]
    for pid, start in daemons:  # only if the check failed: leave nothing running
        if alive(int(pid), start):
            os.kill(int(pid), signal.SIGKILL)
    results: dict[str, Any] = {
        "tasks": submitted, "ended": ended, "by_kind": dict(counts),
        "daemons_started": len(daemons), "server_deaths": server_deaths, "lost": lost,
        "wrong_class": len(wrong), "leftover_daemons": daemons_alive,
        "leftover_processes": len(left_procs), "leftover_cgroups": len(left_cgroups),
        "serve_exit": code, "wall_s": round(wall, 1),
    }
    print(table(["count", "value"], sorted(results.items(), key=lambda kv: kv[0])))
    for line in wrong[:20]:
        print(f"wrong: {line}")
    emit("chaos_server", args, results, notes=[f"work directory {work} (removed if clean)"])
    bad = server_deaths or lost or wrong or daemons_alive or left_procs or left_cgroups
    if not bad:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
