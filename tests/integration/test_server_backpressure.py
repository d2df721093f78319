"""A burst of 50,000 tasks against a real server: 429s, nothing accepted is lost,
the server's memory stays under its limit."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil
import pytest

from oomguard.cli.bench import spawned_server
from oomguard.cli.exit_codes import ExitCode
from oomguard.units import parse_size

NOOP = "oomguard.examples:noop"
LIMIT = "512MiB"


def test_burst_gets_429_and_every_accepted_task_completes() -> None:
    args = ["--workers", "2", "--max-pending-tasks", "10000", "--scheduler-memory-limit", LIMIT]
    with spawned_server(args) as (url, pid):
        server = psutil.Process(pid)
        peak = 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, server.memory_info().rss)
                stop.wait(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        results: list[tuple[int, Any, str | None]] = []

        def post(n: int) -> None:
            with httpx.Client(timeout=60) as client:
                r = client.post(f"{url}/v1/jobs", json={"task": NOOP, "count": n})
                results.append((r.status_code, r.json(), r.headers.get("retry-after")))

        try:
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(post, [2000] * 25))
            accepted = [body for status, body, _ in results if status == 201]
            refused = [(body, retry) for status, body, retry in results if status != 201]
            assert accepted and refused
            for body, retry in refused:
                assert body["error"]["code"] == "queue_full"
                assert retry is not None and float(retry) >= 1
            deadline = time.monotonic() + 120
            for job in accepted:
                while True:
                    status = httpx.get(f"{url}/v1/jobs/{job['job_id']}").json()
                    if status["state"] == "succeeded":
                        assert status["counts"]["succeeded"] == 2000
                        break
                    assert status["state"] in ("waiting", "running"), status
                    assert time.monotonic() < deadline, status
                    time.sleep(0.1)
            text = httpx.get(f"{url}/metrics").text
            assert (
                f'oomguard_submissions_rejected_total{{reason="queue_full"}} {float(len(refused))}'
            ) in text
        finally:
            stop.set()
            watcher.join()
        assert 0 < peak < parse_size(LIMIT)


@pytest.fixture(scope="module")
def quota_server() -> Any:
    args = ["--workers", "1", "--namespace-quota", "small=100", "--max-pending-tasks", "100000"]
    with spawned_server(args) as (url, _pid):
        yield url


def test_namespace_quota(quota_server: str) -> None:
    url = quota_server
    slow = {"task": "oomguard.examples:sleep", "args": {"seconds": 0.2}, "namespace": "small"}
    assert httpx.post(f"{url}/v1/jobs", json=dict(slow, count=100)).status_code == 201
    r = httpx.post(f"{url}/v1/jobs", json=dict(slow, count=1))
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "namespace_quota"
    assert r.headers["retry-after"]
    # other namespaces are not held back by it
    other = httpx.post(f"{url}/v1/jobs", json={"task": NOOP, "count": 500})
    assert other.status_code == 201


def submit_batch(url: str, count: int, retries: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "oomguard.cli.main",
            "submit-batch",
            NOOP,
            "--server",
            url,
            "--count",
            str(count),
            "--namespace",
            "small",
            "--retries",
            str(retries),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_batch_over_the_quota_is_refused_for_good(quota_server: str) -> None:
    done = submit_batch(quota_server, 101, retries=2)
    assert done.returncode == ExitCode.PAYLOAD  # 413: never retried, it would never fit
    assert "batch_too_large" in done.stderr and "split the batch" in done.stderr


def test_cli_retries_then_fails_with_backpressure(quota_server: str) -> None:
    url = quota_server
    slow = {"task": "oomguard.examples:sleep", "args": {"seconds": 0.2}, "namespace": "small"}
    httpx.post(f"{url}/v1/jobs", json=dict(slow, count=100))  # full now (201 or 429)
    start = time.monotonic()
    done = submit_batch(url, 100, retries=2)
    assert done.returncode == ExitCode.BACKPRESSURE
    assert "namespace_quota" in done.stderr and "3 attempt(s)" in done.stderr
    assert time.monotonic() - start >= 2  # it waited Retry-After (1 s) twice
    # a batch that fits once the quota frees is accepted after retries
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "oomguard.cli.main",
            "submit-batch",
            NOOP,
            "--server",
            url,
            "--count",
            "10",
            "--namespace",
            "small",
            "--retries",
            "60",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["tasks"] == 10
