"""`oomguard serve` as a real process on 127.0.0.1, and the CLI clients in subprocesses;
the app in process where a test reads the store behind it."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.polling import wait_for
from oomguard.api.app import ServerSettings, ServerState, create_app, serving_state
from oomguard.cli.bench import free_port, spawned_server
from oomguard.cli.client import remote_status
from oomguard.cli.exit_codes import ExitCode
from oomguard.cli.process import terminate
from oomguard.errors import BlobMissingError
from oomguard.store.blobs import PARAMS_INLINE_MAX
from oomguard.store.sqlite import SqliteStore

NOOP = "oomguard.examples:noop"
#: requests that change state need a JSON body or this header (see api.guard)
CLIENT = {"X-Oomguard-Client": "test"}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with spawned_server(["--workers", "2", "--max-pending-tasks", "10000"]) as (url, _pid):
        yield url


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oomguard.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def wait_done(url: str, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job_id}").json()
        if status["state"] not in ("waiting", "running"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def job_count(url: str) -> int:
    return len(httpx.get(f"{url}/v1/jobs", params={"limit": 1000}).json()["jobs"])


def test_cli_submit_and_status(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    done = cli("submit", NOOP, "--server", server, "--args", '{"x": 3}', "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["tasks"] == 1
    status = wait_done(server, job["job_id"])
    assert status["counts"]["succeeded"] == 1
    tasks = httpx.get(f"{server}/v1/jobs/{job['job_id']}/tasks").json()["tasks"]
    assert tasks[0]["params"] is None  # arguments are listed only when asked for
    url = f"{server}/v1/jobs/{job['job_id']}/tasks"
    tasks = httpx.get(url, params={"params": "full"}).json()["tasks"]
    assert tasks[0]["params"] == {"x": 3}
    assert remote_status(server, job["job_id"], None, True) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "succeeded"


def test_cli_submit_batch_with_fanout(server: str) -> None:
    done = cli(
        "submit-batch",
        "oomguard.examples:allocate",
        "--server",
        server,
        "--count",
        "30",
        "--fanout",
        "3",
        "--batch-size",
        "7",
        "--args",
        '{"mib": 0.1}',
        "--json",
    )
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["tasks"] == 90 and job["groups"] == 30
    status = wait_done(server, job["job_id"])
    assert status["counts"]["succeeded"] == 90
    assert status["groups"] == 30


def test_failed_task_listed_by_class(server: str) -> None:
    r = httpx.post(f"{server}/v1/jobs", json={"task": "oomguard.examples:fail", "count": 2})
    assert r.status_code == 201
    job_id = r.json()["job_id"]
    assert wait_done(server, job_id)["state"] == "failed"
    failed = httpx.get(
        f"{server}/v1/jobs/{job_id}/tasks", params={"state": "failed", "class": "error"}
    ).json()["tasks"]
    assert len(failed) == 2
    assert remote_status(server, job_id, None, False) == ExitCode.TASKS_FAILED
    text = httpx.get(f"{server}/metrics").text
    assert (
        'oomguard_attempt_failures_total{class="error",function="oomguard.examples:fail"}' in text
    )


def test_cancel(server: str) -> None:
    r = httpx.post(
        f"{server}/v1/jobs",
        json={"task": "oomguard.examples:sleep", "args": {"seconds": 0.5}, "count": 50},
    )
    job_id = r.json()["job_id"]
    refused = httpx.delete(f"{server}/v1/jobs/{job_id}", headers=CLIENT)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "job_active"
    cancelled = httpx.post(f"{server}/v1/jobs/{job_id}/cancel", headers=CLIENT).json()
    assert cancelled["cancelled"] > 0
    assert wait_done(server, job_id)["state"] == "cancelled"
    # Once its scheduler stopped the running attempts, the job can be forgotten.
    forgotten = wait_for(
        lambda: (
            (d := httpx.delete(f"{server}/v1/jobs/{job_id}", headers=CLIENT)).status_code == 200
            and d
        ),
        timeout=30,
    )
    assert forgotten.json()["tasks"] == 50
    assert httpx.get(f"{server}/v1/jobs/{job_id}").status_code == 404


@pytest.mark.parametrize("ctype", ["application/octet-stream", "application/python-pickle"])
def test_pickle_refused(server: str, ctype: str) -> None:
    before = job_count(server)
    body = pickle.dumps({"task": NOOP, "args": {}})
    r = httpx.post(f"{server}/v1/jobs", content=body, headers={"content-type": ctype})
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert job_count(server) == before


BAD = [
    (b"{not json", 400),
    (json.dumps({"task": NOOP, "surprise": 1}).encode(), 422),
    (json.dumps({"task": NOOP, "count": -1}).encode(), 422),
    (json.dumps({"task": NOOP, "count": "many"}).encode(), 422),
    (json.dumps({"task": NOOP, "args": [1, 2]}).encode(), 422),
    (json.dumps({"task": "os:system", "args": {"command": "true"}}).encode(), 422),
    (json.dumps({"task": "oomguard.examples:time.sleep"}).encode(), 422),
    (json.dumps({"task": "oomguard.examples:psutil"}).encode(), 422),
    (json.dumps({"task": "oomguard.examples:nothing"}).encode(), 422),
    (json.dumps({"task": NOOP, "args": {"y": 1}}).encode(), 422),
    (json.dumps({"task": NOOP, "fanout": 2}).encode(), 422),
    (json.dumps({"task": NOOP, "count": 2, "tasks": [{}]}).encode(), 422),
    (json.dumps({"task": NOOP, "args": {"x": "a" * (2 * 1024 * 1024)}}).encode(), 413),
    (json.dumps([1, 2, 3]).encode(), 422),
]


@pytest.mark.parametrize(("body", "status"), BAD, ids=range(len(BAD)))
def test_bad_input_stores_nothing(server: str, body: bytes, status: int) -> None:
    before = job_count(server)
    r = httpx.post(f"{server}/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) >= {"code", "message"}
    assert job_count(server) == before


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ServerState]]:
    """The app served by uvicorn in a thread of this process, with its state (and store)."""
    import uvicorn

    store = tmp_path_factory.mktemp("in-process") / "s.sqlite"
    with serving_state(ServerSettings(store=str(store), workers=1)) as state:
        port = free_port()
        config = uvicorn.Config(
            create_app(state), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        http = uvicorn.Server(config)
        thread = threading.Thread(target=http.run, name="test-uvicorn")
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not http.started:
                assert thread.is_alive() and time.monotonic() < deadline
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}", state
        finally:
            http.should_exit = True
            thread.join(30)


def _stored(value: bytes | BlobMissingError) -> bytes:
    """A result's pickled value, which the test expects stored (not a missing blob)."""
    assert isinstance(value, bytes), value
    return value


def stored_counts(state: ServerState) -> tuple[int, int, int]:
    """(jobs, tasks, blob files) in the store behind the app."""
    store = state.stores.get()
    assert isinstance(store, SqliteStore)  # looks inside the SQLite backend
    jobs = store.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    tasks = store.db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
    blobs = len(list(store.blob_dir.iterdir())) if store.blob_dir.exists() else 0
    return jobs, tasks, blobs


def test_large_args_stored_as_blob_and_run(in_process: tuple[str, ServerState]) -> None:
    url, state = in_process
    big = "b" * (200 * 1024)
    other = "c" * (100 * 1024)
    r = httpx.post(
        f"{url}/v1/jobs", json={"task": NOOP, "tasks": [{"x": big}, {"x": "small"}, {"x": other}]}
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    status = wait_done(url, job_id)
    assert status["state"] == "succeeded" and status["counts"]["succeeded"] == 3
    store = state.stores.get()
    assert isinstance(store, SqliteStore)  # looks inside the SQLite backend
    rows = store.db.execute(
        "SELECT params IS NULL, params_ref IS NOT NULL FROM tasks WHERE job_id = ? ORDER BY id",
        (job_id,),
    ).fetchall()
    assert rows == [(1, 1), (0, 0), (1, 1)]  # only args over PARAMS_INLINE_MAX go to a blob
    assert len(big) > PARAMS_INLINE_MAX
    results = [pickle.loads(_stored(value)) for *_, value in store.queries.result_rows(job_id)]
    assert results == [big, "small", other]
    listed = httpx.get(f"{url}/v1/jobs/{job_id}/tasks", params={"params": "full"})
    tasks = listed.json()["tasks"]
    # arguments kept in a blob file are too large to list (and never read for a listing)
    assert [t["params"] for t in tasks] == [None, {"x": "small"}, None]
    assert [t["params_truncated"] for t in tasks] == [True, False, True]
    # The same args for every group: one blob, shared by the rows.
    r = httpx.post(f"{url}/v1/jobs", json={"task": NOOP, "args": {"x": big}, "count": 2})
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    assert wait_done(url, job_id)["counts"]["succeeded"] == 2
    refs = store.db.execute("SELECT params_ref FROM tasks WHERE job_id = ?", (job_id,)).fetchall()
    assert len(refs) == 2 and refs[0] == refs[1] and refs[0][0] is not None
    rows_after = store.queries.result_rows(job_id)
    assert [pickle.loads(_stored(value)) for *_, value in rows_after] == [big, big]


@pytest.mark.parametrize("form", ["args", "tasks"])
def test_args_over_one_mib_refused_and_nothing_stored(
    in_process: tuple[str, ServerState], form: str
) -> None:
    url, state = in_process
    huge = {"x": "h" * (1024 * 1024 + 1)}
    body: dict[str, Any] = {"task": NOOP, "args": huge}
    if form == "tasks":  # the blob of the first task must not be written either
        body = {"task": NOOP, "tasks": [{"x": "a" * (100 * 1024)}, huge]}
    before = stored_counts(state)
    r = httpx.post(f"{url}/v1/jobs", json=body)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"
    assert stored_counts(state) == before


def test_unknown_job_and_route(server: str) -> None:
    for path in ("/v1/jobs/doesnotexist", "/v1/jobs/doesnotexist/tasks", "/v1/jobs/a%25b"):
        r = httpx.get(server + path)
        assert r.status_code == 404
        assert r.json()["error"]["code"] in ("job_not_found", "not_found")
    assert httpx.post(f"{server}/v1/jobs/doesnotexist/cancel", headers=CLIENT).status_code == 404
    assert httpx.get(f"{server}/v1/debug/heap").status_code == 404  # not --heap-profiling


def test_metrics_names(server: str) -> None:
    text = httpx.get(f"{server}/metrics").text
    for name in (
        "oomguard_tasks{",
        "oomguard_scheduler_rss_bytes ",
        "oomguard_scheduler_memory_limit_bytes ",
        "oomguard_memory_budget_bytes ",
        "oomguard_memory_admitted_bytes ",
        "oomguard_worker_rss_bytes{",
        "oomguard_submissions_rejected_total{",
        "oomguard_attempt_failures_total",
        "oomguard_worker_recycles_total",
        "oomguard_worker_isolation{",
    ):
        assert name in text, name
    # Each worker says how it isolates attempts.
    line = r'^oomguard_worker_isolation\{mode="([^"]+)",worker="w\d+"\} 1\.0$'
    modes = re.findall(line, text, re.M)
    assert len(modes) == 2 and set(modes) <= {"cgroup-v1", "cgroup-v2", "watchdog"}, text
    assert httpx.get(f"{server}/openapi.json").json()["paths"]["/v1/jobs"]


def test_cli_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = cli("submit", NOOP, "--server", url)
    assert done.returncode == ExitCode.CONNECTION
    assert "cannot reach" in done.stderr
    assert "Traceback" not in done.stderr
    assert remote_status(url, None, None, False) == ExitCode.CONNECTION


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    token = "s3cret-token-for-tests-0123456789"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)  # a token file others may read is refused
    port = free_port("127.0.0.2")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oomguard.cli.main",
            "serve",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--listen",
            f"127.0.0.2:{port}",
            "--workers",
            "1",
            "--token-file",
            str(token_file),
            "--heap-profiling",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.2:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield url, token, str(token_file)
    finally:
        terminate(proc, 30)
        if proc.stderr:
            proc.stderr.close()


def test_token_required_off_loopback(token_server: tuple[str, str, str]) -> None:
    url, token, token_file = token_server
    assert httpx.get(f"{url}/healthz").status_code == 200
    for path in ("/v1/jobs", "/metrics", "/openapi.json"):
        r = httpx.get(url + path)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "unauthorized"
    bad = httpx.get(f"{url}/v1/jobs", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{url}/v1/jobs", headers=auth).status_code == 200
    assert httpx.post(f"{url}/v1/jobs", json={"task": NOOP}).status_code == 401
    done = cli("submit", NOOP, "--server", url, "--token-file", token_file, "--json")
    assert done.returncode == 0, done.stderr
    denied = cli("submit", NOOP, "--server", url)
    assert denied.returncode == ExitCode.USAGE
    heap = cli("profile", "heap", "--server", url, "--token-file", token_file, "--json")
    assert heap.returncode == 0, heap.stderr
    assert json.loads(heap.stdout)["top"]


def test_non_loopback_without_token_refuses_to_start(tmp_path: Path) -> None:
    done = cli("serve", "--store", str(tmp_path / "s.sqlite"), "--listen", f"0.0.0.0:{free_port()}")
    assert done.returncode == ExitCode.USAGE
    assert "--token-file" in done.stderr
    assert not (tmp_path / "s.sqlite").exists()


def test_bad_serve_options(tmp_path: Path) -> None:
    for args in (
        ["--listen", "nonsense"],
        ["--namespace-quota", "x"],
        ["--scheduler-memory-limit", "lots"],
    ):
        done = cli("serve", "--store", str(tmp_path / "s.sqlite"), *args)
        assert done.returncode == ExitCode.USAGE, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_scheduler_limit_above_container_limit(tmp_path: Path) -> None:
    from oomguard.api.app import container_memory_limit

    limit = container_memory_limit()
    if limit is None:
        pytest.skip("this process has no cgroup memory limit to exceed")
    done = cli(
        "serve", "--store", str(tmp_path / "s.sqlite"), "--scheduler-memory-limit", str(limit + 1)
    )
    assert done.returncode == ExitCode.USAGE
    assert "container" in done.stderr


def test_promtool_checks_alert_rules() -> None:
    from fixtures.programs import required_program

    promtool = required_program("promtool", "apt-get install -y prometheus")
    rules = Path(__file__).parents[2] / "deploy" / "prometheus" / "alerts.yml"
    done = subprocess.run(
        [promtool, "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stdout + done.stderr
