"""Notifications alone: notices, what each channel makes of them, the bounded outbox, the
config keys. Real HTTP deliveries are in tests/integration/test_notify_*.py."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from oomguard.config import RunnerConfig, load_config
from oomguard.errors import ConfigError
from oomguard.notify import AttemptNotice, Fanout, JobNotice, MemoryNotifier, Outbox
from oomguard.notify.build import build_notifier, read_keys, read_secret
from oomguard.notify.jsonlog import JsonFormatter, JsonLogNotifier, json_line
from oomguard.notify.notice import MAX_KERNEL_LINES, MAX_MESSAGE, kernel_excerpt
from oomguard.notify.sentry import sentry_event
from oomguard.notify.webhook import event_name, sign, verify, webhook_body

MIB = 1024 * 1024
KILLED = (
    "Memory cgroup out of memory: Killed process 4242 (python) total-vm:1100000kB, "
    "anon-rss:262000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:600kB oom_score_adj:800"
)


def oom_notice(outcome: str = "failed") -> AttemptNotice:
    return AttemptNotice.of(
        job_id="j1",
        task_id=7,
        attempt_id=11,
        attempt=2,
        function="oomguard.examples:allocate",
        outcome=outcome,
        failure_class="oom_cgroup",
        final_class="needs_more_memory" if outcome == "failed" else None,
        message="needs more memory than oomguard can give: ...",
        memory_key="oomguard.examples:allocate",
        limit_bytes=256 * MIB,
        peak_bytes=256 * MIB,
        worker="w1",
        evidence={
            "signal": 9,
            "signal_name": "SIGKILL",
            "kernel_lines": ["python invoked oom-killer: gfp_mask=0xcc0", KILLED],
            "cgroup_before": {"oom_kill": 0},  # not a scalar: not carried
        },
    )


def error_notice(outcome: str = "retrying") -> AttemptNotice:
    return AttemptNotice.of(
        job_id="j1",
        task_id=8,
        attempt_id=12,
        attempt=1,
        function="oomguard.examples:fail",
        outcome=outcome,
        failure_class="error",
        final_class="error" if outcome == "failed" else None,
        message="RuntimeError: boom",
        limit_bytes=64 * MIB,
        evidence={"traceback": "Traceback (most recent call last):\n  ...\nRuntimeError: boom\n"},
    )


# -- notices -------------------------------------------------------------------------------


def test_a_notice_keeps_bounded_text_and_the_killed_process_line() -> None:
    lines = [f"line {i}" for i in range(500)] + [KILLED]
    notice = AttemptNotice.of(
        job_id="j",
        task_id=1,
        attempt_id=1,
        attempt=1,
        function="m:f",
        outcome="retrying",
        failure_class="oom_cgroup",
        message="x" * 100_000,
        evidence={"kernel_lines": lines, "traceback": "t" * 100_000, "kernel_log": "k" * 5000},
    )
    assert len(notice.kernel_lines) == MAX_KERNEL_LINES
    assert notice.kernel_lines[-1] == KILLED and notice.kernel_lines[0] == "line 0"
    assert notice.message is not None and len(notice.message) == MAX_MESSAGE
    assert notice.traceback is not None and len(notice.traceback) <= 8000
    assert isinstance(notice.evidence["kernel_log"], str)
    assert len(notice.evidence["kernel_log"]) <= 300
    assert kernel_excerpt("not a list") == ()


def test_outcomes_say_failed_and_final() -> None:
    assert oom_notice("failed").final and oom_notice("failed").failed
    assert oom_notice("retrying").failed and not oom_notice("retrying").final
    assert oom_notice("failed").group_class == "needs_more_memory"
    assert oom_notice("retrying").group_class == "oom_cgroup"


# -- Sentry --------------------------------------------------------------------------------


def test_sentry_event_of_a_final_oom_kill() -> None:
    event: dict[str, Any] = sentry_event(oom_notice("failed"))
    assert event["level"] == "error"
    assert event["culprit"] == event["transaction"] == "oomguard.examples:allocate"
    assert event["fingerprint"] == ["oomguard", "oomguard.examples:allocate", "needs_more_memory"]
    assert event["tags"]["failure_class"] == "oom_cgroup"
    assert event["tags"]["final_class"] == "needs_more_memory"
    context = event["contexts"]["oomguard"]
    assert context["memory_key"] == "oomguard.examples:allocate"
    assert context["limit_bytes"] == 256 * MIB and context["peak_bytes"] == 256 * MIB
    assert context["attempt"] == 2 and context["worker"] == "w1"
    assert context["signal_name"] == "SIGKILL" and "cgroup_before" not in context
    assert KILLED in event["message"].splitlines()
    json.dumps(event)  # JSON-ready


def test_sentry_event_of_a_retried_error_carries_the_traceback() -> None:
    event: dict[str, Any] = sentry_event(error_notice("retrying"))
    assert event["level"] == "warning"
    assert event["fingerprint"] == ["oomguard", "oomguard.examples:fail", "error"]
    assert "Traceback (most recent call last)" in event["message"]
    assert "final_class" not in event["tags"]
    # Retried and final errors of one function are one issue.
    assert sentry_event(error_notice("failed"))["fingerprint"] == event["fingerprint"]


def test_sentry_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "sentry_sdk", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"oomguard\[sentry\]"):
        build_notifier(RunnerConfig(sentry_dsn="http://k@127.0.0.1:9/1"))


def test_a_bad_dsn_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid Sentry DSN"):
        build_notifier(RunnerConfig(sentry_dsn="not a dsn"))


# -- webhooks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "retrying", "failed", "job"),
    [
        (("final", "job"), None, "task_failed", "job_finished"),
        (("failed",), "attempt_failed", "task_failed", None),
        (("job",), None, None, "job_finished"),
        (("final",), None, "task_failed", None),
    ],
)
def test_notify_on_selects_events(
    on: tuple[str, ...], retrying: str | None, failed: str | None, job: str | None
) -> None:
    done = JobNotice(job_id="j", name="n", namespace="default", function="m:f", state="failed")
    running = JobNotice(job_id="j", name="n", namespace="default", function="m:f", state="running")
    assert event_name(oom_notice("retrying"), on) == retrying
    assert event_name(oom_notice("failed"), on) == failed
    assert event_name(done, on) == job
    assert event_name(running, on) is None
    succeeded = AttemptNotice.of(
        job_id="j", task_id=1, attempt_id=1, attempt=1, function="m:f", outcome="succeeded"
    )
    assert event_name(succeeded, ("failed", "final", "job")) is None


def test_webhook_body_and_signature() -> None:
    body: dict[str, Any] = webhook_body(
        "task_failed", oom_notice("failed"), seq=3, delivery_id="r-3"
    )
    assert body["event"] == "task_failed" and body["seq"] == 3 and body["id"] == "r-3"
    assert body["text"].startswith("oomguard: oomguard.examples:allocate: task 7")
    assert body["failure_class"] == "oom_cgroup" and body["final_class"] == "needs_more_memory"
    assert KILLED in body["kernel_lines"]
    raw = json.dumps(body).encode()
    headers = sign([b"s3cret", b"next"], "r-3", 1_700_000_000, raw)
    assert headers["webhook-id"] == "r-3" and headers["webhook-timestamp"] == "1700000000"
    first, second = headers["webhook-signature"].split(" ")  # two keys: a rotation
    assert second.startswith("v1,") and second != first
    assert first.startswith("v1,") and len(base64.b64decode(first[3:])) == 32
    now = 1_700_000_010.0
    assert verify(b"s3cret", headers, raw, now=now) and verify(b"next", headers, raw, now=now)
    assert not verify(b"other", headers, raw, now=now)
    assert not verify(b"s3cret", headers, raw + b" ", now=now)
    assert not verify(b"s3cret", {**headers, "webhook-timestamp": "1700000001"}, raw, now=now)
    assert not verify(b"s3cret", headers, raw, now=now + 3600)  # too old: a replay
    assert not verify(b"s3cret", {}, raw, now=now)


def test_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("  key\n")
    path.chmod(0o600)
    assert read_secret(str(path)) == b"key"
    path.write_text("whsec_" + base64.b64encode(b"\x00binary").decode() + "\nnext\n")
    assert read_keys(str(path)) == (b"\x00binary", b"next")
    path.write_text("a\nb\nc\n")
    with pytest.raises(ConfigError, match="at most 2"):
        read_keys(str(path))
    path.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_secret(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret(str(tmp_path / "missing"))
    path.write_text("key\n")
    path.chmod(0o644)  # readable by every local user: no secret
    with pytest.raises(ConfigError, match="open to its group or others"):
        read_secret(str(path))
    path.chmod(0o600)
    try:
        os.chown(path, 65534, 65534)
    except PermissionError:
        return  # giving a file to another user needs root
    with pytest.raises(ConfigError, match="belongs to another user"):
        read_secret(str(path))


# -- JSON logs -----------------------------------------------------------------------------

ATTEMPT_KEYS = [
    "ts", "level", "logger", "event", "job_id", "task_id", "attempt_id", "attempt",
    "function", "outcome", "failure_class", "final_class", "message", "memory_key",
    "limit_bytes", "peak_bytes", "worker", "retry_at", "kernel_lines", "traceback", "evidence",
]  # fmt: skip
JOB_KEYS = [
    "ts", "level", "logger", "event", "job_id", "job_name", "namespace", "function", "state",
    "tasks", "counts", "failures_by_class",
]  # fmt: skip


def test_json_lines_have_stable_keys() -> None:
    """The keys README "JSON logs" documents, in that order, whatever the notice."""
    for notice in (oom_notice("failed"), error_notice("retrying")):
        assert list(json_line(notice)) == ATTEMPT_KEYS
    ok = AttemptNotice.of(
        job_id="j", task_id=1, attempt_id=1, attempt=1, function="m:f", outcome="succeeded"
    )
    line = json_line(ok)
    assert list(line) == ATTEMPT_KEYS
    assert line["level"] == "info" and line["failure_class"] is None
    assert json_line(oom_notice("failed"))["level"] == "error"
    assert json_line(error_notice("retrying"))["level"] == "warning"
    job = JobNotice(job_id="j", name="n", namespace="d", function="m:f", state="succeeded")
    assert list(json_line(job)) == JOB_KEYS
    ts = json_line(job)["ts"]
    assert isinstance(ts, str) and ts.endswith("Z")


def test_json_log_notifier_writes_a_line_per_notice() -> None:
    stream = io.StringIO()
    notifier = JsonLogNotifier(stream=lambda: stream)
    notifier.notify(oom_notice("failed"))
    notifier.notify(JobNotice(job_id="j", name="n", namespace="d", function="f", state="failed"))
    notifier.close(10)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["attempt_ended", "job_state"]


def test_json_formatter_for_log_records() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "oomguard.x", logging.ERROR, "f", 1, "oops %s", ("a",), sys.exc_info()
        )
    line = json.loads(JsonFormatter().format(record))
    assert list(line) == ["ts", "level", "logger", "event", "message", "exception"]
    assert line["message"] == "oops a" and line["level"] == "error" and line["event"] == "log"
    assert "ValueError: bad" in line["exception"]


# -- the outbox ----------------------------------------------------------------------------


def test_outbox_drops_and_counts_past_its_bound() -> None:
    release = threading.Event()
    delivered: list[int] = []

    def deliver(item: int) -> bool:
        release.wait(10)
        delivered.append(item)
        return True

    box: Outbox[int] = Outbox("test", deliver, size=10)
    box.start()
    accepted = [box.put(i) for i in range(1000)]
    # One may be taken by the thread (being delivered) but it stays counted as waiting.
    assert sum(accepted) == 10
    assert box.stats().dropped == 990 and box.stats().waiting == 10
    release.set()
    stats = box.close(10)
    assert delivered == list(range(10))
    assert (stats.delivered, stats.dropped, stats.waiting) == (10, 990, 0)


def test_outbox_is_bounded_in_bytes_too() -> None:
    box: Outbox[str] = Outbox("bytes", lambda item: True, size=1000, weigh=len, max_bytes=100)
    # Not started: nothing is taken off the queue.
    assert box.put("x" * 500)  # an empty queue takes one item whatever its size
    assert not box.put("y")
    box = Outbox("bytes", lambda item: True, size=1000, weigh=len, max_bytes=100)
    assert [box.put("z" * 30) for _ in range(5)] == [True, True, True, False, False]
    assert box.stats().dropped == 2


def test_a_notice_weighs_its_text() -> None:
    notice = oom_notice()
    assert notice.weight >= len(KILLED) + len(notice.message or "")
    assert oom_notice().weight < 4096


def test_outbox_close_gives_up_at_its_deadline() -> None:
    def deliver(item: int) -> bool:
        return not box.wait(60)  # a receiver that never answers: wait to be abandoned

    box: Outbox[int] = Outbox("stuck", deliver, size=5)
    box.start()
    for i in range(5):
        box.put(i)
    stats = box.close(0.2)
    assert not box.alive
    assert stats.delivered == 0 and stats.failed + stats.waiting == 5
    assert not box.put(99)  # closed: dropped


def test_fanout_survives_a_broken_notifier() -> None:
    class Broken:
        def notify(self, notice: object) -> None:
            raise RuntimeError("bug")

        def close(self, timeout: float) -> None:
            raise RuntimeError("bug")

    memory = MemoryNotifier()
    fan = Fanout([Broken(), memory])
    fan.notify(oom_notice())
    fan.close(1)
    assert len(memory.notices) == 1 and memory.closed


# -- config --------------------------------------------------------------------------------


def test_notification_config_from_toml_and_env(tmp_path: Path) -> None:
    toml = tmp_path / "oomguard.toml"
    toml.write_text(
        'sentry_dsn = "http://k@127.0.0.1:9/1"\n'
        'notify_url = ["http://127.0.0.1:1/a", "http://127.0.0.1:2/b"]\n'
        'notify_on = ["failed", "job"]\n'
        'log_format = "json"\n'
        "notify_queue = 50\n"
    )
    config = load_config(toml, env={})
    assert config.notify_url == ("http://127.0.0.1:1/a", "http://127.0.0.1:2/b")
    assert config.notify_on == ("failed", "job")
    assert (config.log_format, config.notify_queue) == ("json", 50)
    env = {
        "OOMGUARD_NOTIFY_URL": "http://127.0.0.1:3/c",
        "OOMGUARD_NOTIFY_ON": "final,job",
        "OOMGUARD_LOG_FORMAT": "plain",
    }
    config = load_config(toml, env=env)
    assert config.notify_url == ("http://127.0.0.1:3/c",)
    assert config.notify_on == ("final", "job") and config.log_format == "plain"
    assert RunnerConfig(notify_url="http://x/y").notify_url == ("http://x/y",)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"notify_on": ("sometimes",)}, "notify on"),
        ({"notify_url": ("ftp://x",)}, "http"),
        ({"log_format": "xml"}, "log format"),
        ({"notify_queue": 0}, "notify queue"),
        ({"notify_timeout": 0}, "notify timeout"),
    ],
)
def test_bad_notification_config(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RunnerConfig(**changes)  # type: ignore[arg-type]


def test_unknown_notification_key_is_rejected(tmp_path: Path) -> None:
    toml = tmp_path / "oomguard.toml"
    toml.write_text('notify_urls = ["http://127.0.0.1:1/a"]\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(toml, env={})
