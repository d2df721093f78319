"""The real sentry-sdk, sending to a Sentry stand-in on 127.0.0.1 that records envelopes:
failed attempts of real workers become events grouped by function and class.
(OOM kills by the kernel: tests/system/test_notify_oom.py.)"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import oomguard
from fixtures.polling import wait_for
from fixtures.receivers import SentryRelay

pytest.importorskip("sentry_sdk", reason="needs the sentry extra: pip install 'oomguard[sentry]'")

pytestmark = pytest.mark.timeout(300)


def test_100_failures_of_one_function_and_class_are_one_fingerprint(tmp_path: Path) -> None:
    with SentryRelay() as relay:
        with oomguard.Runner(
            store=str(tmp_path / "s.sqlite"), workers=2, sentry_dsn=relay.dsn
        ) as runner:
            failing = runner.sweep(
                "oomguard.examples:fail", ({"message": f"bad input {i}"} for i in range(100))
            )
            other = runner.sweep("fixtures.tasks:fail_after", [{"seconds": 0}])
            fine = runner.sweep("oomguard.examples:noop", [{"x": i} for i in range(20)])
            for job in (failing, other, fine):
                job.wait(timeout=240, progress=False)
        # Closing the runner drained the queue into the SDK, and the SDK's transport.
        events = wait_for(lambda: len(relay.events()) >= 101 and relay.events(), timeout=30)
    assert len(events) == 101  # one per failed attempt; successes send nothing
    by_function = Counter(e["transaction"] for e in events)
    assert by_function == {"oomguard.examples:fail": 100, "fixtures.tasks:fail_after": 1}
    fail = [e for e in events if e["transaction"] == "oomguard.examples:fail"]
    assert {tuple(e["fingerprint"]) for e in fail} == {
        ("oomguard", "oomguard.examples:fail", "error")
    }
    (odd,) = [e for e in events if e["transaction"] != "oomguard.examples:fail"]
    assert odd["fingerprint"] != fail[0]["fingerprint"]
    for event in fail:
        assert event["level"] == "error"  # retries=0: every one is final
        assert event["culprit"] == "oomguard.examples:fail"
        assert event["tags"]["failure_class"] == "error"
        assert event["tags"]["final_class"] == "error"
        # The traceback is the message body.
        assert "Traceback (most recent call last)" in event["message"]
        assert "RuntimeError: bad input" in event["message"]
        context = event["contexts"]["oomguard"]
        assert {"task_id", "attempt", "memory_key", "limit_bytes", "worker"} <= set(context)
        assert context["attempt"] == 1
    assert len({e["contexts"]["oomguard"]["task_id"] for e in fail}) == 100


def test_a_retried_error_is_a_warning_and_its_last_attempt_an_error(tmp_path: Path) -> None:
    with SentryRelay() as relay:
        with oomguard.Runner(
            store=str(tmp_path / "s.sqlite"),
            workers=1,
            retries=1,
            retry_backoff=0.05,
            sentry_dsn=relay.dsn,
        ) as runner:
            runner.sweep("oomguard.examples:fail", [{"message": "once more"}]).wait(
                timeout=120, progress=False
            )
        events = wait_for(lambda: len(relay.events()) >= 2 and relay.events(), timeout=30)
    assert [(e["level"], e["contexts"]["oomguard"]["attempt"]) for e in events] == [
        ("warning", 1),
        ("error", 2),
    ]
    assert events[0]["fingerprint"] == events[1]["fingerprint"]


def test_a_burst_larger_than_the_sdk_queue_arrives_whole() -> None:
    """The backlog waits in oomguard's outbox (bounded, counted), not in the SDK's own
    queue, which would drop what does not fit."""
    from oomguard.notify import AttemptNotice
    from oomguard.notify.sentry import SDK_QUEUE, SentryNotifier

    n = 2 * SDK_QUEUE + 100
    with SentryRelay() as relay:
        notifier = SentryNotifier(relay.dsn, queue_size=n)
        for i in range(n):
            notifier.notify(
                AttemptNotice.of(
                    job_id="j",
                    task_id=i,
                    attempt_id=i,
                    attempt=1,
                    function="m:f",
                    outcome="retrying",
                    failure_class="timeout",
                    message="ran past 1 s",
                )
            )
        notifier.close(60)
        events = relay.events()
    assert sorted(e["contexts"]["oomguard"]["task_id"] for e in events) == list(range(n))
