"""A real `oomguard serve` stays bounded under hostile input: submission bombs are refused
before they are parsed, errors are never echoed whole, listings and responses have a size.

Memory is read from ``/proc/PID/status`` (VmHWM, reset before each bomb); the bounds are far
below what the same requests cost before (a 4 MiB body of ``{}`` took the server from
58 MB to 711 MB; 0.7 MB of ``[1, 1, ...]`` got a 32.9 MB answer).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.serve_process import Served, peak_rss, reset_peak_rss, rss, serve

NOOP = "oomguard.examples:noop"
MIB = 1024 * 1024
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("limits")
    with serve(tmp, "--workers", "1", "--max-pending-tasks", "100000") as served:
        yield served


def listed(items: str, n: int) -> bytes:
    """A submission of NOOP whose ``tasks`` are ``n`` copies of the JSON ``items``."""
    return (f'{{"task": "{NOOP}", "tasks": [' + ",".join([items] * n) + "]}").encode()


def post(served: Served, body: bytes) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/jobs", content=body, headers=JSON, timeout=120)


def job_count(served: Served) -> int:
    return len(httpx.get(f"{served.url}/v1/jobs", params={"limit": 1000}).json()["jobs"])


def growth(served: Served, send: Any) -> tuple[httpx.Response, int]:
    """The answer to ``send()`` and how far the server's resident memory rose meanwhile."""
    reset_peak_rss(served.pid)
    before = rss(served.pid)
    response = send()
    return response, peak_rss(served.pid) - before


def test_submission_bomb_refused_before_it_is_parsed(server: Served) -> None:
    jobs = job_count(server)
    n = 4 * MIB // 3
    body = listed("{}", n)
    r, grew = growth(server, lambda: post(server, body))
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["code"] == "payload_too_large"
    assert grew < 48 * MIB, f"the server grew by {grew / MIB:.0f} MiB"
    assert job_count(server) == jobs


def test_validation_errors_are_bounded(server: Served) -> None:
    ints = listed("1", 90_000)
    long_name = json.dumps({"task": NOOP, "k" * MIB: 1}).encode()
    extra = json.dumps({"task": NOOP, **{f"f{i}": i for i in range(50_000)}}).encode()
    for body in (ints, long_name, extra):
        r, grew = growth(server, lambda body=body: post(server, body))
        assert r.status_code == 422, r.text[:300]
        assert len(r.content) < 8 * 1024, len(r.content)
        error = r.json()["error"]
        assert error["code"] == "invalid_request"
        assert 1 <= len(error["details"]) <= 10
        assert grew < 48 * MIB, f"the server grew by {grew / MIB:.0f} MiB"
    assert "more errors not shown" in post(server, ints).json()["error"]["message"]


def test_batch_larger_than_max_pending_refused_for_good(server: Served) -> None:
    jobs = job_count(server)
    listed = json.dumps({"task": NOOP, "tasks": [{"x": i} for i in range(100_001)]}).encode()
    counted = json.dumps({"task": NOOP, "count": 100_001}).encode()
    for body in (listed, counted):
        r, grew = growth(server, lambda body=body: post(server, body))
        # 413, not 429: no retry would ever make it fit
        assert r.status_code == 413, r.text[:300]
        assert r.json()["error"]["code"] == "batch_too_large"
        assert "retry-after" not in r.headers
        assert grew < 48 * MIB, f"the server grew by {grew / MIB:.0f} MiB"
    assert job_count(server) == jobs


def test_body_over_8_mib_refused(server: Served) -> None:
    # Each task's arguments are under the 1 MiB limit; the body is not.
    body = json.dumps({"task": NOOP, "tasks": [{"x": "a" * (900 * 1024)} for _ in range(10)]})
    assert len(body) > 8 * MIB
    r = post(server, body.encode())
    assert r.status_code == 413, r.text[:300]
    assert "8388608" in r.json()["error"]["message"]


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_submissions_are_read_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body is parsed and validated on a worker thread (where no event loop runs), so
    a large one never holds up ``/healthz`` or other requests."""
    from starlette.testclient import TestClient

    import oomguard.api.submissions as submissions
    from oomguard.api.app import ServerSettings, create_app, serving_state

    on_loop: list[bool] = []
    read = submissions.read_submission  # type: ignore[attr-defined]  # the name it calls

    def watched(*args: Any) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return read(*args)

    monkeypatch.setattr(submissions, "read_submission", watched)
    settings = ServerSettings(store=str(tmp_path / "s.sqlite"), workers=1)
    with serving_state(settings) as state, TestClient(create_app(state)) as client:
        r = client.post("/v1/jobs", json={"task": NOOP, "args": {"x": 1}})
        assert r.status_code == 201, r.text
        bad = client.post("/v1/jobs", json={"task": NOOP, "tasks": [1] * 1000})
        assert bad.status_code == 422
    assert on_loop == [False, False]


def wait_finished(served: Served, job_id: str) -> None:
    deadline = time.monotonic() + 120
    while httpx.get(f"{served.url}/v1/jobs/{job_id}").json()["state"] in ("waiting", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_listing_large_arguments_stays_small(server: Served) -> None:
    # 40 tasks sharing one 1 MiB argument (one blob file): a listing of all of them read and
    # parsed it once per row (163 MB -> 1,243 MB).
    big = {"task": NOOP, "args": {"x": "b" * (MIB - 100)}, "count": 40}
    r = httpx.post(f"{server.url}/v1/jobs", json=big, timeout=60)
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    wait_finished(server, job_id)
    tasks_url = f"{server.url}/v1/jobs/{job_id}/tasks"
    for params in ("none", "full"):
        r, grew = growth(
            server, lambda p=params: httpx.get(tasks_url, params={"limit": 40, "params": p})
        )
        assert r.status_code == 200, r.text[:300]
        listed = r.json()
        assert len(listed["tasks"]) == 40
        assert all(t["params"] is None for t in listed["tasks"])
        assert all(t["params_truncated"] == (params == "full") for t in listed["tasks"])
        assert len(r.content) < 64 * 1024
        assert grew < 16 * MIB, f"the server grew by {grew / MIB:.0f} MiB"
    assert httpx.get(tasks_url, params={"limit": 10_000}).status_code == 422


def test_listing_is_cut_at_its_size_and_pages(server: Served) -> None:
    # 100 tasks with 60 KiB of arguments each (kept in their rows): 6 MB of arguments.
    tasks = [{"x": f"{i:03d}" + "c" * (60 * 1024)} for i in range(100)]
    r = httpx.post(f"{server.url}/v1/jobs", json={"task": NOOP, "tasks": tasks}, timeout=60)
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    seen: list[str] = []
    after = None
    while True:
        query: dict[str, Any] = {"limit": 1000, "params": "full"}
        if after is not None:
            query["after"] = after
        r = httpx.get(f"{server.url}/v1/jobs/{job_id}/tasks", params=query)
        assert r.status_code == 200
        assert len(r.content) < 5 * MIB
        page = r.json()
        seen += [t["params"]["x"][:3] for t in page["tasks"]]
        if not page["truncated"]:
            break
        assert page["next_after"] == page["tasks"][-1]["task_id"]
        after = page["next_after"]
    assert seen == [f"{i:03d}" for i in range(100)]
