"""A scheduler loop that dies of a bug is loud: a traceback on stderr, a non-zero exit
(`run` and `serve`), 503 from `serve` meanwhile, and the same cleanup as a clean stop.

The loop is made to die by :mod:`fixtures.dying_scheduler` (its ``step`` raises once a
trigger file exists) in the real CLI process, or by the same patch on a server's
scheduler in this process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from fixtures.cli_process import Running, exit_code, reap, start_run, start_serve
from fixtures.dying_scheduler import MESSAGE
from fixtures.polling import wait_for
from oomguard.api.app import ServerSettings, ServerState, create_app, serving_state
from oomguard.cli.bench import free_port
from oomguard.cli.exit_codes import ExitCode

pytestmark = pytest.mark.timeout(180)


@contextmanager
def served(state: ServerState) -> Iterator[httpx.Client]:
    """The app over ``state`` served by uvicorn in a thread (no lifespan: the caller
    closes the state); a client of it."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        create_app(state), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn")
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=30)
        assert server.started
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)


def assert_loud(stderr: str) -> None:
    assert "the scheduler loop died" in stderr, stderr
    assert "Traceback (most recent call last)" in stderr, stderr
    assert f"RuntimeError: {MESSAGE}" in stderr, stderr


def test_run_exits_scheduler_died_with_the_traceback(tmp_path: Path) -> None:
    store, trigger = tmp_path / "s.sqlite", tmp_path / "die"
    started = start_run(tmp_path, store, trigger=trigger)
    try:
        running = Running(started, store)
        trigger.touch()
        # The 30 s task is not waited for: the run ends as soon as it has cleaned up.
        assert exit_code(started, timeout=25) == ExitCode.SCHEDULER_DIED, started.output()
        assert_loud(started.output())
        running.assert_cleaned_up(started, store)
    finally:
        reap(started)


def test_serve_answers_503_then_exits_scheduler_died(tmp_path: Path) -> None:
    store, trigger = tmp_path / "s.sqlite", tmp_path / "die"
    started = start_serve(tmp_path, store, trigger=trigger)
    try:
        running = Running(started, store)
        trigger.touch()
        answers: set[int] = set()

        def exited() -> bool:
            # A TransportError: the server already closed its socket.
            with contextlib.suppress(httpx.TransportError):
                answers.add(httpx.get(f"{started.url}/healthz", timeout=2).status_code)
            return started.proc.poll() is not None

        wait_for(exited, timeout=25, interval=0.01)
        # Until it stopped listening it never said it was healthy (503 may not be seen:
        # it exits within a few tenths of a second).
        assert answers <= {200, 503}
        assert started.proc.returncode == ExitCode.SCHEDULER_DIED, started.output()
        assert_loud(started.output())
        running.assert_cleaned_up(started, store)
    finally:
        reap(started)


def test_a_server_whose_scheduler_died_refuses_with_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ServerSettings(store=str(tmp_path / "s.sqlite"), workers=1)
    with serving_state(settings) as state, served(state) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"

        def step(*args: object, **kwargs: object) -> None:
            raise RuntimeError(MESSAGE)

        with caplog.at_level(logging.ERROR, logger="oomguard"):
            assert state.runner.scheduler is not None
            state.runner.scheduler.step = step  # type: ignore[method-assign]
            wait_for(lambda: state.runner.died is not None, timeout=10)
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "scheduler_stopped"
        assert health.json()["scheduler_alive"] is False
        jobs = client.get("/v1/jobs").json()["jobs"]
        refused = client.post("/v1/jobs", json={"task": "oomguard.examples:noop"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "scheduler_stopped"
        assert client.get("/v1/jobs").json()["jobs"] == jobs  # nothing stored
        assert 'oomguard_submissions_rejected_total{reason="scheduler_stopped"} 1.0' in (
            client.get("/metrics").text
        )
        # The traceback went to the log, at ERROR, with the exception.
        died = [r for r in caplog.records if "the scheduler loop died" in r.getMessage()]
        assert died and died[0].levelno == logging.ERROR
        assert died[0].exc_info is not None and died[0].exc_info[1] is state.runner.died
        wait_for(lambda: not state.runner.alive, timeout=30)
