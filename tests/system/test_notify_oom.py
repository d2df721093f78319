"""Real kernel OOM kills in the worker's memory cgroup, reported to Sentry (the real
sentry-sdk, a Sentry stand-in on 127.0.0.1) and to a webhook, on the dead worker's behalf."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import oomguard
from fixtures.polling import wait_for
from fixtures.receivers import Recorder, SentryRelay
from oomguard.notify.webhook import verify

if TYPE_CHECKING:
    from conftest import RunCli

pytest.importorskip("sentry_sdk", reason="needs the sentry extra: pip install 'oomguard[sentry]'")

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]


def test_an_oom_killed_task_is_one_event_with_the_kernel_line(
    tmp_path: Path, require_cgroup: None
) -> None:
    """Killed at 128 MiB (64 MiB declared + headroom), retried with more, and it succeeds:
    one warning event for the kill, tagged with its class, the kernel's line in its body."""
    with SentryRelay() as relay:
        with oomguard.Runner(
            store=str(tmp_path / "s.sqlite"),
            workers=1,
            isolation="cgroup",
            worker_memory="1GiB",
            task_memory="64MiB",
            sentry_dsn=relay.dsn,
        ) as runner:
            job = runner.sweep("oomguard.examples:allocate", [{"mib": 200}])
            status = job.wait(timeout=120, progress=False)
        assert status["counts"]["succeeded"] == 1
        assert status["failures_by_class"] == {"oom_cgroup": 1}
        events = wait_for(relay.events, timeout=30)
    (event,) = events
    assert event["level"] == "warning"
    assert event["tags"]["failure_class"] == "oom_cgroup"
    assert event["tags"]["final"] == "false"
    assert event["transaction"] == "oomguard.examples:allocate"
    assert event["fingerprint"] == ["oomguard", "oomguard.examples:allocate", "oom_cgroup"]
    killed = [line for line in event["message"].splitlines() if "Killed process" in line]
    assert killed, event["message"]
    context = event["contexts"]["oomguard"]
    assert context["limit_bytes"] == 128 * 1024**2
    assert context["peak_bytes"] > 100 * 1024**2
    assert context["attempt"] == 1 and context["worker"]
    assert str(context["pid"]) in killed[0]


def test_needs_more_memory_is_an_error_event_and_a_signed_webhook(
    tmp_path: Path, cli: RunCli, require_cgroup: None
) -> None:
    """``oomguard run`` of a 1 GiB task under --worker-memory 256MiB: killed at the most
    oomguard can give, it fails as needs_more_memory: an error-level Sentry event, and a
    signed ``task_failed`` POST with the kernel's line."""
    params = tmp_path / "p.jsonl"
    params.write_text(json.dumps({"mib": 1024}) + "\n")
    secret = tmp_path / "secret"
    secret.write_text("hook-key\n")
    secret.chmod(0o600)
    with SentryRelay() as relay, Recorder() as hook:
        res = cli(
            "run",
            "oomguard.examples:allocate",
            "--params",
            str(params),
            "--store",
            str(tmp_path / "s.sqlite"),
            "--workers",
            "1",
            "--worker-memory",
            "256MiB",
            "--isolation",
            "cgroup",
            "--json",
            "--sentry-dsn",
            relay.dsn,
            "--notify-url",
            hook.url,
            "--notify-secret-file",
            str(secret),
        )
        assert res.returncode == 1, res.stderr
        # The process drained its queues before it exited.
        events = relay.events()
        posts = hook.received()
    (event,) = events
    assert event["level"] == "error"
    assert event["tags"]["failure_class"] == "oom_cgroup"
    assert event["tags"]["final_class"] == "needs_more_memory"
    assert event["fingerprint"] == ["oomguard", "oomguard.examples:allocate", "needs_more_memory"]
    assert event["message"].startswith("oomguard.examples:allocate: needs_more_memory")
    assert any("Killed process" in line for line in event["message"].splitlines())
    assert event["contexts"]["oomguard"]["limit_bytes"] == 256 * 1024**2
    # --notify-on defaults to final and job: the task that failed for good, then its job.
    assert [p.json()["event"] for p in posts] == ["task_failed", "job_finished"]
    for post in posts:
        assert verify(b"hook-key", post.headers, post.body)
    body = posts[0].json()
    assert body["final_class"] == "needs_more_memory" and body["failure_class"] == "oom_cgroup"
    assert any("Killed process" in line for line in body["kernel_lines"])
    assert body["limit_bytes"] == 256 * 1024**2
    assert posts[1].json()["state"] == "failed"
