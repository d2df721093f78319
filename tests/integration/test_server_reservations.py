"""Reservations that cannot race, and a bounded number of namespaces, against a real
`oomguard serve` on 127.0.0.1.

Concurrent submissions are written in many small transactions while the server counts
the store twice a second: before, a count that saw part of a batch dropped the whole of
its reservation, and 100,000 + 60,000 tasks were accepted against a limit of 100,000.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fixtures.polling import wait_for
from fixtures.serve_process import Served, serve

SLEEP = {"task": "oomguard.examples:sleep", "args": {"seconds": 60}}
NOOP = "oomguard.examples:noop"


def pending(served: Served) -> int:
    return int(httpx.get(f"{served.url}/healthz").json()["pending_tasks"])


def test_concurrent_submissions_never_pass_max_pending(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "1", "--max-pending-tasks", "12000") as served:
        accepted: list[int] = []
        lock = threading.Lock()
        until = time.monotonic() + 6

        def submit() -> None:
            # One row per transaction: each batch takes several of the server's counts
            # (every 0.5 s) to write; refused ones are sent again meanwhile.
            body = dict(SLEEP, count=5000, batch_size=1)
            with httpx.Client(timeout=120) as client:
                while time.monotonic() < until:
                    r = client.post(f"{served.url}/v1/jobs", json=body)
                    if r.status_code == 201:
                        with lock:
                            accepted.append(r.json()["tasks"])
                    else:
                        assert r.status_code == 429, r.text
                        assert r.json()["error"]["code"] == "queue_full"
                        time.sleep(0.05)

        threads = [threading.Thread(target=submit) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # None of the sleeping tasks finished: every accepted task is still pending.
        assert sum(accepted) == 10000, accepted
        store_counted = wait_for(lambda: (n := pending(served)) == 10000 and n, timeout=10)
        assert store_counted == 10000


@pytest.fixture(scope="module")
def few_namespaces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("namespaces")
    # --max-namespaces through its environment variable
    env = {"OOMGUARD_MAX_NAMESPACES": "3"}
    with serve(tmp, "--workers", "1", "--namespace-quota", "team=1000", env=env) as served:
        yield served


def test_new_namespaces_refused_past_the_limit(few_namespaces: Served) -> None:
    url = few_namespaces.url
    jobs = []
    for ns in ("a", "b", "c"):
        r = httpx.post(f"{url}/v1/jobs", json=dict(SLEEP, namespace=ns))
        assert r.status_code == 201, r.text
        jobs.append(r.json()["job_id"])
    r = httpx.post(f"{url}/v1/jobs", json=dict(SLEEP, namespace="d"))
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "too_many_namespaces"
    assert r.headers["retry-after"]
    # a namespace with pending tasks, or one with a quota, is not held back
    for ns in ("a", "team"):
        r = httpx.post(f"{url}/v1/jobs", json=dict(SLEEP, namespace=ns))
        assert r.status_code == 201, r.text
        jobs.append(r.json()["job_id"])
    # once a namespace has no pending task, a new one fits
    for job_id in jobs:
        cancel = httpx.post(f"{url}/v1/jobs/{job_id}/cancel", json={})
        assert cancel.status_code == 200
    wait_for(
        lambda: httpx.post(f"{url}/v1/jobs", json=dict(SLEEP, namespace="d")).status_code == 201,
        timeout=30,
        interval=0.2,
    )
    job_id = httpx.get(f"{url}/v1/jobs", params={"limit": 1}).json()["jobs"][0]["job_id"]
    assert httpx.post(f"{url}/v1/jobs/{job_id}/cancel", json={}).status_code == 200


def test_metrics_do_not_grow_with_namespaces(few_namespaces: Served) -> None:
    url = few_namespaces.url
    for i in range(12):
        body = {"task": NOOP, "args": {"x": i}, "namespace": f"ns{i}"}
        wait_for(  # room comes as earlier namespaces' tasks finish: slower on a busy machine
            lambda body=body: httpx.post(f"{url}/v1/jobs", json=body).status_code == 201,
            timeout=90,
            interval=0.1,
        )

    def labelled() -> list[str]:
        text = httpx.get(f"{url}/metrics").text
        return re.findall(r'^oomguard_submitted_tasks_total\{namespace="([^"]+)"\}', text, re.M)

    # At most 3 namespaces without a quota counted, whatever clients chose (and "team").
    wait_for(lambda: len(set(labelled()) - {"team"}) <= 3, timeout=10, interval=0.1)
    assert len(httpx.get(f"{url}/metrics").content) < 16 * 1024


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_per_job_state_forgotten_when_jobs_finish(tmp_path: Path) -> None:
    """The server's job -> namespace map holds only jobs with open tasks (it held every job
    ever submitted)."""
    from starlette.testclient import TestClient

    from oomguard.api.app import ServerSettings, create_app, serving_state

    settings = ServerSettings(store=str(tmp_path / "s.sqlite"), workers=1)
    with serving_state(settings) as state, TestClient(create_app(state)) as client:
        jobs = []
        for i in range(20):
            r = client.post("/v1/jobs", json={"task": NOOP, "args": {"x": i}})
            assert r.status_code == 201, r.text
            jobs.append(r.json()["job_id"])
        store = state.stores.get()
        wait_for(lambda: all(store.queries.counts(j)["succeeded"] for j in jobs), timeout=60)
        state.poll_pending()
        assert state._namespaces == {}
        assert state.backpressure.pending.total() == 0
