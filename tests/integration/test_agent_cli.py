"""``oomguard agent`` as a subprocess over a saved kernel log: webhooks signed under the
secret file, one Sentry issue per workload (the real sentry-sdk, a Sentry stand-in), JSON
log lines; pod names from a kubelet stand-in and UIDs when it is away; bad input is a
message and an exit code, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from fixtures.receivers import Recorder, SentryRelay
from oomguard.agent.kubelet import KubeletPods
from oomguard.notify.webhook import verify

ROOT = Path(__file__).resolve().parent.parent.parent
REPORTS = ROOT / "tests" / "fixtures" / "oom_reports"
UID = "0330b2c1-a15b-4cdd-b5e5-72d4a90bee82"
CID = "b27201334a41cd0749d053b18378d7ea65617b8e26277197ea25c974da1a5a8a"
POD_PATH = f"/kubepods/burstable/pod{UID}/{CID}"


def _pod_log(tmp: Path) -> Path:
    """The recorded kmsg report, its cgroup moved to a pod's container."""
    text = (REPORTS / "local_memcg_v1_kmsg_6.18.log").read_text()
    text = text.replace(
        "/process_api/c66312b277881b075c01bdd1b4fabe94/kernlog_fixture_2288", POD_PATH
    )
    path = tmp / "kern.log"
    path.write_text(text)
    return path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _agent(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "oomguard.cli.main", "agent", "--lookback", "1000d", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "tests")),
    )


def _until(check: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _stop(agent: subprocess.Popen[str]) -> tuple[str, str]:
    agent.send_signal(signal.SIGTERM)
    out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    return out, err


class Kubelet:
    """Answers ``/pods`` with one pod (or 500 once ``down``)."""

    def __init__(self) -> None:
        self.down = False
        kubelet = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if kubelet.down or self.path != "/pods":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(
                    {
                        "kind": "PodList",
                        "items": [
                            {
                                "metadata": {"uid": UID, "namespace": "batch", "name": "etl-7f9c"},
                                "status": {
                                    "containerStatuses": [
                                        {"name": "main", "containerID": f"containerd://{CID}"}
                                    ]
                                },
                            }
                        ],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def kubelet() -> Iterator[Kubelet]:
    k = Kubelet()
    k.thread.start()
    try:
        yield k
    finally:
        k.server.shutdown()
        k.server.server_close()
        k.thread.join(5)


def test_a_kill_to_a_signed_webhook_sentry_and_json_logs_named_by_the_kubelet(
    tmp_path: Path, kubelet: Kubelet
) -> None:
    pytest.importorskip("sentry_sdk", reason="needs the sentry extra")
    secret = tmp_path / "secret"
    secret.write_text("hook-key\n")
    secret.chmod(0o600)
    port = _port()
    with Recorder() as hook, SentryRelay() as relay:
        agent = _agent(
            "--kernel-log",
            str(_pod_log(tmp_path)),
            "--notify-url",
            hook.url,
            "--notify-secret-file",
            str(secret),
            "--sentry-dsn",
            relay.dsn,
            "--log-format",
            "json",
            "--kubelet-url",
            kubelet.url,
            "--listen",
            f"127.0.0.1:{port}",
            "--node-name",
            "node-1",
        )
        try:
            _until(lambda: hook.received() and relay.events())
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        finally:
            _out, err = _stop(agent)
        (post,) = hook.received()
        (event,) = relay.events()
    assert verify(b"hook-key", post.headers, post.body)
    assert post.headers["X-Oomguard-Event"] == "oom_kill"
    body = post.json()
    assert (body["namespace"], body["pod"], body["container"]) == ("batch", "etl-7f9c", "main")
    assert (body["pod_uid"], body["container_id"]) == (UID, CID)
    assert (body["victim_pid"], body["command"], body["trigger"]) == (3128, "python", "cgroup")
    assert body["node"] == "node-1" and body["severity"] == "warning"
    assert body["text"].startswith("oomguard: warning: OOM kill of python (pid 3128")
    assert "batch/etl-7f9c/main" in body["text"]
    assert event["level"] == "warning"
    assert event["fingerprint"] == ["oomguard-agent", f"pod/{UID}/main"]
    assert event["tags"]["namespace"] == "batch" and event["tags"]["pod"] == "etl-7f9c"
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [line["victim_pid"] for line in lines if line.get("event") == "oom_kill"] == [3128]
    assert (
        'oomguard_agent_oom_kills_total{command="python",container="main",'
        'namespace="batch",pod="etl-7f9c",severity="warning",trigger="cgroup",unit=""} 1.0'
    ) in metrics
    assert health["ok"] is True and health["kills_seen"] == 1 and health["lines_read"] > 0


def test_without_the_kubelet_a_pod_is_its_uid(tmp_path: Path, kubelet: Kubelet) -> None:
    kubelet.down = True
    names = KubeletPods(kubelet.url)
    assert names.lookup(UID) is None and names.errors == 1
    kubelet.down = False
    assert names.lookup(UID) is None  # asked again only after refresh_s
    fresh = KubeletPods(kubelet.url)
    found = fresh.lookup(UID)
    assert found is not None and found.container(CID) == "main"
    names.close()
    fresh.close()
    away = KubeletPods("http://127.0.0.1:9", timeout=0.5)  # nothing listens there
    assert away.lookup(UID) is None
    away.close()

    with Recorder() as hook:
        agent = _agent(
            "--kernel-log",
            str(_pod_log(tmp_path)),
            "--notify-url",
            hook.url,
            "--kubelet-url",
            "http://127.0.0.1:9",
        )
        try:
            _until(hook.received)
        finally:
            _stop(agent)
        (post,) = hook.received()
    body = post.json()
    assert (body["pod_uid"], body["pod"], body["namespace"]) == (UID, None, None)
    assert body["workload"] == f"pod {UID}/{CID[:12]}"


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--policy", "{tmp}/missing.toml"], "--policy", 2),
        (["--policy", "{tmp}/bad.toml"], "is not TOML", 2),
        (["--listen", "nonsense"], "--listen 'nonsense' is not HOST:PORT", 2),
        (["--kernel-log", "{tmp}/no-such.log"], "cannot read", 7),
        (["--lookback", "soon"], "invalid duration", 2),
        (["--state", "{tmp}/bad.json"], "not an agent cursor", 2),
    ],
)
def test_bad_input_is_a_message_and_an_exit_code(
    tmp_path: Path, args: list[str], message: str, code: int
) -> None:
    (tmp_path / "bad.toml").write_text("[[oom_score_adj]\n")
    (tmp_path / "bad.json").write_text("{}")
    agent = _agent(*[a.format(tmp=tmp_path) for a in args])
    _out, err = agent.communicate(timeout=60)
    assert agent.returncode == code, err
    assert message in err
    assert "Traceback" not in err
