"""The dashboard's "retry with more memory" in a real browser (headless Chromium from
Debian's `chromium`, driven over the DevTools protocol on a pipe) against a real
`oomguard serve --tokens-file`: a task killed at --worker-memory fails needs_more_memory;
after a restart with more memory, log in, filter the failures to it, follow "retry these
with more memory", give the memory, confirm, and see the job succeed.

Skipped only where the browser is absent and this is not CI; in CI (CI=true) a missing
browser fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.browser import find_chromium
from fixtures.polling import wait_for
from fixtures.serve_process import serve

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

TOKEN = "token-of-team-a-0123456789"
TOKENS = f'[tokens.team-a]\ntoken = "{TOKEN}"\nrole = "submit"\nnamespaces = ["team-a"]\n'
BEARER = {"Authorization": f"Bearer {TOKEN}", "X-Oomguard-Client": "test"}


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


class Browser:
    """One page of headless Chromium over ``--remote-debugging-pipe`` (JSON messages
    ended by NUL: commands on fd 3, answers and events on fd 4)."""

    def __init__(self, chromium: str, profile: Path) -> None:
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()

        def fds() -> None:
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            preexec_fn=fds,
            pass_fds=(3, 4, to_child, from_child),  # kept after fds()
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable", session=True)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            assert time.monotonic() < deadline, "the browser did not answer"
            chunk = os.read(self._in, 1 << 16)
            assert chunk, "the browser closed its pipe"
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        found: dict[str, Any] = json.loads(message)
        return found

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._id:
                assert "error" not in answer, answer
                result: dict[str, Any] = answer.get("result", {})
                return result
            self.events.append(answer)

    def _loaded(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            if any(e.get("method") == "Page.loadEventFired" for e in self.events):
                self.events.clear()
                return
            self.events.append(self._read(deadline))

    def go(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self._loaded()

    def run(self, script: str, navigates: bool = False) -> Any:
        """Evaluate ``script`` in the page (and wait for the page it opens)."""
        self.events.clear()
        answer = self.call("Runtime.evaluate", session=True, expression=script, returnByValue=True)
        assert "exceptionDetails" not in answer, answer
        if navigates:
            self._loaded()
        return answer.get("result", {}).get("value")

    def text(self) -> str:
        value: str = self.run("document.body.innerText")
        return value

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        os.close(self._in)
        os.close(self._out)


@pytest.fixture()
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium, tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.close()


def test_retry_with_more_memory_from_the_failures_page(browser: Browser, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS)
    tokens.chmod(0o600)
    args = ("--tokens-file", str(tokens), "--isolation", "watchdog", "--workers", "1")
    with serve(tmp_path, *args, "--worker-memory", "96MiB") as first:
        r = httpx.post(
            f"{first.url}/v1/jobs",
            json={
                "task": "oomguard.examples:allocate",
                "args": {"mib": 150, "hold": 0.2},
                "namespace": "team-a",
                "name": "needs-more",
            },
            headers=BEARER,
        )
        assert r.status_code == 201, r.text
        job_id = r.json()["job_id"]

        def state(url: str) -> str | None:
            s: str = httpx.get(f"{url}/v1/jobs/{job_id}", headers=BEARER).json()["state"]
            return s if s in ("succeeded", "failed") else None

        assert wait_for(lambda: state(first.url), timeout=120) == "failed"
    with serve(tmp_path, *args, "--worker-memory", "512MiB") as served:
        url = served.url
        browser.go(f"{url}/ui/login")
        browser.run(
            f"document.querySelector('input[name=token]').value = {json.dumps(TOKEN)};"
            "document.querySelector('form[action=\"/ui/login\"]').submit()",
            navigates=True,
        )
        assert "log out" in browser.text(), browser.text()
        browser.go(f"{url}/ui/failures?failure_class=needs_more_memory")
        assert "needs_more_memory" in browser.text()
        browser.run("document.querySelector('a.raise').click()", navigates=True)
        browser.run(
            "document.querySelector('input[name=memory]').value = '300MiB';"
            "document.querySelector('input[name=memory]').form.submit()",
            navigates=True,
        )
        assert "It touches 1 task(s)." in browser.text()
        browser.run(
            "document.querySelector('main form[method=post] button').click()", navigates=True
        )
        assert "1 task(s) ready to run again with at least 300MiB" in browser.text()
        assert wait_for(lambda: state(url), timeout=120) == "succeeded"
        browser.go(f"{url}/ui/jobs/{job_id}")
        assert "succeeded" in browser.text()
