"""Secrets of the notification channels against a real `oomguard serve`: webhook URLs
never printed whole (logs, the exit summary) nor in /proc/PID/cmdline when given by file;
secret files others may read are refused; the --redact list and the channels' own secrets
are scrubbed from webhook bodies and Sentry events (messages, stderr tails, memory keys);
Sentry names a command by its label; a job name that would ping @channel with a disguised
link reaches Slack as plain text, its raw value kept in the JSON field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.cli_process import reap, serve, stop_serve
from fixtures.polling import wait_for
from fixtures.receivers import Recorder, SentryRelay, closed_port

pytestmark = pytest.mark.timeout(300)

SECRET_PATH = "/services/T0ABCDEF/B0GHIJKL/HookTokenThatIsTheCredential"
LEAKED = "sk-live-0123456789abcdefghijklmnop"
SLACK_ATTACK = "<!channel> <https://evil.example/login|re-enter your token>"


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def serving(tmp_path: Path, *args: str) -> tuple[Any, str]:
    return serve(tmp_path, tmp_path / "s.sqlite", *args)


def test_a_webhook_url_is_never_printed_nor_on_the_command_line(tmp_path: Path) -> None:
    port = closed_port()  # a receiver that is down: the server logs about it
    hook = f"http://127.0.0.1:{port}{SECRET_PATH}"
    urls = private(tmp_path / "urls", f"# the team's Slack\n{hook}\n")
    started, url = serving(tmp_path, "--notify-url-file", str(urls), "--notify-on", "failed")
    try:
        cmdline = Path(f"/proc/{started.pid}/cmdline").read_bytes().decode()
        assert SECRET_PATH not in cmdline and str(urls) in cmdline
        r = httpx.post(f"{url}/v1/jobs", json={"task": "oomguard.examples:fail", "args": {}})
        assert r.status_code == 201, r.text
        wait_for(lambda: "retrying with backoff" in started.output(), timeout=60)
        stop_serve(started)
    finally:
        reap(started)
    out = started.output()
    assert f"webhook 1 (http://127.0.0.1:{port}/…)" in out
    assert "not delivered" in out  # the exit summary, naming the receiver the same way
    assert "HookTokenThatIsTheCredential" not in out and "T0ABCDEF" not in out


@pytest.mark.parametrize(
    "option", ["--notify-url-file", "--notify-secret-file", "--sentry-dsn-file", "--tokens-file"]
)
def test_a_secret_file_others_can_read_is_refused(tmp_path: Path, option: str) -> None:
    path = private(tmp_path / "secret", "http://127.0.0.1:9/hook\n", mode=0o644)
    args = [sys.executable, "-m", "oomguard.cli.main", "serve", "--store",
            str(tmp_path / "s.sqlite"), option, str(path)]  # fmt: skip
    if option == "--notify-secret-file":
        args += ["--notify-url", "http://127.0.0.1:9/hook"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "open to its group or others (mode 0644)" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "s.sqlite").exists()


def test_what_leaves_the_host_is_redacted_and_slack_safe(tmp_path: Path) -> None:
    commands = private(
        tmp_path / "commands.json",
        json.dumps(
            {
                "leak": [
                    sys.executable,
                    "-c",
                    f"import sys; sys.stderr.write('auth {LEAKED} refused'); sys.exit(3)",
                ]
            }
        ),
    )
    with Recorder() as hook, SentryRelay() as relay:
        urls = private(tmp_path / "urls", hook.url + "\n")
        dsn = private(tmp_path / "dsn", relay.dsn + "\n")
        started, url = serving(
            tmp_path,
            "--commands", str(commands),
            "--notify-url-file", str(urls),
            "--sentry-dsn-file", str(dsn),
            "--notify-on", "final", "--notify-on", "job",
            "--redact", r"sk-live-[0-9a-z]+",
        )  # fmt: skip
        try:
            leak = {"command": "leak", "args": {"token": LEAKED}, "memory_key": "token"}
            assert httpx.post(f"{url}/v1/jobs", json=leak).status_code == 201
            attack = {"task": "oomguard.examples:noop", "args": {}, "name": SLACK_ATTACK}
            assert httpx.post(f"{url}/v1/jobs", json=attack).status_code == 201
            wait_for(lambda: len(hook.received()) >= 3 and relay.events(), timeout=90)
            stop_serve(started)
        finally:
            reap(started)
        posts = [p.json() for p in hook.received()]
        events = relay.events()
    raw = json.dumps(posts) + json.dumps(events)
    where = raw.find(LEAKED)
    assert where < 0, raw[max(0, where - 300) : where + 100]
    assert "threads" not in events[0]  # no stack of the sending thread, no local variables
    failed = next(p for p in posts if p["event"] == "task_failed")
    assert "[redacted]" in failed["message"] and "refused" in failed["message"]
    assert "[redacted]" in failed["memory_key"]  # the memory key's value
    (event,) = events
    assert "[redacted]" in event["message"]
    # Sentry names the command by its label: never its arguments.
    assert event["culprit"] == event["transaction"] == f"cmd:{Path(sys.executable).name}"
    assert event["fingerprint"] == ["oomguard", f"cmd:{Path(sys.executable).name}", "error"]
    assert "sys.stderr.write" not in json.dumps(event["fingerprint"]) + event["culprit"]
    assert "publickey" not in raw  # the DSN's key
    # Slack: no ping, no disguised link in the text; the raw name stays in its field.
    job = next(p for p in posts if p["event"] == "job_finished" and p["job_name"] == SLACK_ATTACK)
    assert "<" not in job["text"] and ">" not in job["text"]
    assert "&lt;!channel&gt; &lt;https://evil.example/login|re-enter your token&gt;" in job["text"]


def test_a_long_user_string_is_capped_in_the_text(tmp_path: Path) -> None:
    with Recorder() as hook:
        urls = private(tmp_path / "urls", hook.url + "\n")
        started, url = serving(tmp_path, "--notify-url-file", str(urls), "--notify-on", "final")
        try:
            message = "<" * 5000
            r = httpx.post(
                f"{url}/v1/jobs",
                json={"task": "oomguard.examples:fail", "args": {"message": message}},
            )
            assert r.status_code == 201
            (post,) = wait_for(hook.received, timeout=60)
            stop_serve(started)
        finally:
            reap(started)
    body = post.json()
    assert body["message"].startswith("RuntimeError: <<<")  # the raw value (as kept)
    assert len(body["text"]) < 1200 and body["text"].count("&lt;") == 199 - len("RuntimeError: ")
