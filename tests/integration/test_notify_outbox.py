"""The durable outbox against real `oomguard serve` processes: notices are written to the
store with what caused them; a server stopped (SIGTERM) while its receiver is down leaves
them there, and the next server on the store delivers every one of them, none twice, even
across another restart; past --notify-outbox the oldest are dropped and counted in
/metrics."""

from __future__ import annotations

import base64
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.cli_process import reap, serve, stop_serve
from fixtures.polling import wait_for
from fixtures.receivers import Recorder, closed_port, standard_webhooks_verify

pytestmark = pytest.mark.timeout(300)

TASKS = 20
WHSEC = "whsec_" + base64.b64encode(b"outbox test key").decode()


def serving(tmp_path: Path, store: Path, *args: str) -> tuple[Any, str]:
    """A server on ``store`` (its output in ``tmp_path``, made if missing)."""
    tmp_path.mkdir(exist_ok=True)
    return serve(tmp_path, store, *args)


def outbox_rows(store: Path) -> int:
    with sqlite3.connect(store) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def finished(url: str, job_id: str) -> bool:
    return bool(httpx.get(f"{url}/v1/jobs/{job_id}").json()["state"] == "failed")


def test_a_restart_delivers_what_a_dead_receiver_missed_once(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    port = closed_port()
    key = tmp_path / "hook.key"
    key.write_text(WHSEC + "\n")
    key.chmod(0o600)
    hook_args = ("--notify-url", f"http://127.0.0.1:{port}/hook", "--notify-on", "final",
                 "--notify-on", "job", "--notify-secret-file", str(key))  # fmt: skip
    first, url = serving(tmp_path / "1", store, *hook_args)
    try:
        tasks = [{"message": f"failure {i}"} for i in range(TASKS)]
        r = httpx.post(f"{url}/v1/jobs", json={"task": "oomguard.examples:fail", "args": {},
                                               "tasks": tasks})  # fmt: skip
        assert r.status_code == 201, r.text
        job_id = r.json()["job_id"]
        wait_for(lambda: finished(url, job_id), timeout=120)
        wait_for(lambda: outbox_rows(store) == TASKS + 1, timeout=30)  # and the job's
        stop_serve(first)  # the receiver never answered: nothing was delivered
    finally:
        reap(first)
    assert "not delivered before the stop" in first.output()
    assert outbox_rows(store) == TASKS + 1

    with Recorder(port=port) as hook:
        restarted = int(time.time())
        second, _ = serving(tmp_path / "2", store, *hook_args)
        try:
            wait_for(lambda: len(hook.received()) >= TASKS + 1, timeout=60)
            time.sleep(2)  # nothing more comes
            stop_serve(second)
        finally:
            reap(second)
        third, _ = serving(tmp_path / "3", store, *hook_args)
        try:
            time.sleep(3)  # a third start has nothing left to send
            stop_serve(third)
        finally:
            reap(third)
        posts = hook.received()
    bodies = [p.json() for p in posts]
    assert len(bodies) == TASKS + 1
    assert sorted(b["message"] for b in bodies if b["event"] == "task_failed") == sorted(
        f"RuntimeError: failure {i}" for i in range(TASKS)
    )
    assert [b["event"] for b in bodies].count("job_finished") == 1
    ids = [p.headers["webhook-id"] for p in posts]
    assert len(set(ids)) == len(ids)  # each delivery once
    for post in posts:
        # Signed when sent (after the restart), not when the failure happened.
        standard_webhooks_verify(WHSEC, post.headers, post.body)
        assert int(post.headers["webhook-timestamp"]) >= restarted
    assert [b["seq"] for b in bodies] == sorted(b["seq"] for b in bodies)  # in order
    assert outbox_rows(store) == 0  # delivered rows are deleted


def test_the_outbox_is_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    dead = f"http://127.0.0.1:{closed_port()}/hook"
    started, url = serving(tmp_path, store, "--notify-url", dead, "--notify-on", "final",
                           "--notify-outbox", "5")  # fmt: skip
    try:
        tasks = [{"message": f"failure {i}"} for i in range(12)]
        r = httpx.post(f"{url}/v1/jobs", json={"task": "oomguard.examples:fail", "args": {},
                                               "tasks": tasks})  # fmt: skip
        job_id = r.json()["job_id"]
        wait_for(lambda: finished(url, job_id), timeout=120)

        def dropped() -> float:
            for line in httpx.get(f"{url}/metrics").text.splitlines():
                if line.startswith("oomguard_notifications_dropped_total "):
                    return float(line.split()[1])
            raise AssertionError("no oomguard_notifications_dropped_total")

        wait_for(lambda: dropped() == 7, timeout=30)
        assert outbox_rows(store) == 5
        assert "oomguard_notifications_waiting 5.0" in httpx.get(f"{url}/metrics").text
        stop_serve(started)
    finally:
        reap(started)
    assert "dropped (counted in oomguard_notifications_dropped)" in started.output()
