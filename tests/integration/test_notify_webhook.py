"""Webhooks against a receiver on 127.0.0.1: signatures verify (Standard Webhooks,
checked by an implementation of the spec apart from oomguard's); a receiver that is down,
then comes back, gets every notification in order, signed at the time of the send; one that
never comes back costs a bounded amount of memory; ``oomguard serve`` posts too."""

from __future__ import annotations

import base64
import json
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest

import oomguard
from fixtures.cli_process import reap, serve, stop_serve
from fixtures.polling import wait_for
from fixtures.receivers import (
    Recorder,
    WebhookVerificationError,
    closed_port,
    standard_webhooks_verify,
)
from oomguard.notify import AttemptNotice
from oomguard.notify.webhook import WebhookNotifier


def whsec(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


pytestmark = pytest.mark.timeout(300)


def failure(i: int, message: str = "boom") -> AttemptNotice:
    return AttemptNotice.of(
        job_id="j",
        task_id=i,
        attempt_id=i,
        attempt=1,
        function="m:f",
        outcome="failed",
        failure_class="error",
        final_class="error",
        message=message,
        limit_bytes=1 << 26,
    )


def test_every_post_is_signed_and_verifies(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(whsec(b"s3cret") + "\n")
    secret.chmod(0o600)
    with Recorder() as hook:
        with oomguard.Runner(
            store=str(tmp_path / "s.sqlite"),
            workers=1,
            notify_url=[hook.url],
            notify_on=["failed", "job"],
            notify_secret_file=str(secret),
        ) as runner:
            job = runner.sweep(
                "oomguard.examples:fail",
                [{"message": f"m{i}"} for i in range(3)] + [{"message": "x", "unused": 1}],
            )
            job.wait(timeout=120, progress=False)
        posts = hook.received()
    assert [p.json()["event"] for p in posts] == ["task_failed"] * 4 + ["job_finished"]
    for post in posts:
        body = standard_webhooks_verify(whsec(b"s3cret"), post.headers, post.body)
        with pytest.raises(WebhookVerificationError):
            standard_webhooks_verify(whsec(b"wrong"), post.headers, post.body)
        with pytest.raises(WebhookVerificationError):  # the id is signed too
            standard_webhooks_verify(
                whsec(b"s3cret"), {**post.headers, "webhook-id": "other"}, post.body
            )
        assert post.headers["X-Oomguard-Event"] == body["event"]
        assert post.headers["webhook-id"] == body["id"]
        assert body["text"].startswith("oomguard: ")
    assert [p.json()["seq"] for p in posts] == [1, 2, 3, 4, 5]
    first = posts[0].json()
    assert first["function"] == "oomguard.examples:fail" and first["attempt"] == 1
    assert "RuntimeError" in first["traceback"] and first["outcome"] == "failed"
    assert posts[-1].json()["counts"]["failed"] == 4


def test_a_receiver_that_is_down_then_back_gets_every_event_in_order() -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}/hook"
    notifier = WebhookNotifier([url], on=["failed"], keys=[b"k"], backoff=0.02, backoff_max=0.2)
    (receiver,) = notifier.receivers
    try:
        for i in range(1, 51):
            notifier.notify(failure(i))
        # Refused connections: it retries the first, the others wait behind it.
        wait_for(lambda: receiver.down_since is not None, timeout=10)
        assert receiver.outbox.stats().delivered == 0
        with Recorder(port=port, status=503) as hook:  # up, but failing: still retried
            wait_for(lambda: receiver.outbox.stats().waiting == 50, timeout=10)
            time.sleep(1.1)
            back = int(time.time())
            hook.status = 200
            for i in range(51, 61):  # more while it catches up
                notifier.notify(failure(i))
            wait_for(lambda: len(hook.received()) == 60, timeout=30)
            posts = hook.received()
    finally:
        notifier.close(5)
    bodies = [p.json() for p in posts]
    assert [b["seq"] for b in bodies] == list(range(1, 61))
    assert [b["task_id"] for b in bodies] == list(range(1, 61))
    for post in posts:
        standard_webhooks_verify(whsec(b"k"), post.headers, post.body)
    # Signed when sent, not when the event happened: a receiver that refuses old
    # timestamps still takes deliveries that waited out an outage.
    first = posts[0]
    assert int(first.headers["webhook-timestamp"]) >= back
    assert first.json()["time"] < time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(back))
    (name,) = notifier.stats()
    assert name == f"1 (http://127.0.0.1:{port}/…)"  # never the whole URL
    stats = notifier.stats()[name]
    assert (stats.delivered, stats.dropped, stats.failed) == (60, 0, 0)


def test_a_receiver_that_never_comes_back_costs_bounded_memory() -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    notifier = WebhookNotifier([url], on=["failed"], queue_size=100, backoff=0.05, backoff_max=0.5)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            notifier.notify(failure(i, message="x" * 1500 + str(i)))  # each notice ~2 KB
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        notifier.close(0.5)
    (stats,) = notifier.stats().values()
    # 100 kept (the first: they wait for the receiver), the other 19,900 dropped, counted.
    assert stats.queued == 100 and stats.dropped == 19_900
    assert stats.delivered == 0 and stats.failed + stats.waiting == 100
    # 20,000 notices of ~2 KB went through (~40 MB); what is held is the queue's bound.
    assert held < 2 * 1024 * 1024, held


def test_serve_posts_final_failures_and_logs_json(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    with Recorder() as hook:
        started, url = serve(
            tmp_path,
            store,
            "--notify-url",
            hook.url,
            "--notify-on",
            "final",
            "--log-format",
            "json",
        )
        try:
            r = httpx.post(
                f"{url}/v1/jobs",
                json={"task": "oomguard.examples:fail", "args": {"message": "served"}},
            )
            assert r.status_code == 201, r.text
            (post,) = wait_for(hook.received, timeout=60)
            stop_serve(started)
        finally:
            reap(started)
    body = post.json()
    assert body["event"] == "task_failed" and body["message"] == "RuntimeError: served"
    lines = [json.loads(line) for line in started.output().splitlines() if line.strip()]
    events = [line["event"] for line in lines]
    assert "attempt_ended" in events and "job_state" in events
    assert all({"ts", "level", "logger", "event"} <= set(line) for line in lines)
