"""`--lost-retries N` (OOMGUARD_LOST_RETRIES) of `run` and `serve` reaches the scheduler's
config (``lost_retries``, default 5); a negative value is a usage error."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from oomguard.cli.exit_codes import ExitCode
from oomguard.cli.main import _register, cli
from oomguard.config import RunnerConfig
from oomguard.errors import ConfigError


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    """`run` and `serve` install a SIGTERM handler and a stderr log handler: undo both."""
    handler = signal.getsignal(signal.SIGTERM)
    logger = logging.getLogger("oomguard")
    handlers = list(logger.handlers)
    yield
    signal.signal(signal.SIGTERM, handler)
    logger.handlers[:] = handlers


class _Seen(ConfigError):
    """Raised by the stand-ins below once they saw the config (exit code USAGE)."""


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    _register()
    env = {"OOMGUARD_LOST_RETRIES": "", **(env or {})}
    return CliRunner().invoke(cli, args, env=env)


@pytest.fixture
def run_args(tmp_path: Path) -> list[str]:
    params = tmp_path / "p.jsonl"
    params.write_text('{"x": 1}\n')
    return [
        "run",
        "oomguard.examples:noop",
        "--params",
        str(params),
        "--store",
        str(tmp_path / "s.sqlite"),
    ]


@pytest.fixture
def run_config(monkeypatch: pytest.MonkeyPatch) -> list[RunnerConfig]:
    """The configs `oomguard run` builds its Runner with (the Runner never starts)."""
    # Modules that bind Runner at import (the server's) import the real one first.
    import oomguard.api.service  # noqa: F401

    seen: list[RunnerConfig] = []

    class Runner:
        def __init__(self, config: RunnerConfig) -> None:
            seen.append(config)
            raise _Seen("seen")

    monkeypatch.setattr("oomguard.runner.Runner", Runner)
    return seen


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, 5),
        (["--lost-retries", "2"], {}, 2),
        ([], {"OOMGUARD_LOST_RETRIES": "0"}, 0),
        (["--lost-retries", "7"], {"OOMGUARD_LOST_RETRIES": "1"}, 7),
    ],
)
def test_run_lost_retries(
    run_args: list[str],
    run_config: list[RunnerConfig],
    args: list[str],
    env: dict[str, str],
    expected: int,
) -> None:
    result = _invoke([*run_args, *args], env)
    assert result.exit_code == ExitCode.USAGE and "seen" in result.output, result.output
    assert [c.lost_retries for c in run_config] == [expected]


@pytest.fixture
def serve_config(monkeypatch: pytest.MonkeyPatch) -> list[RunnerConfig]:
    """The runner configs of the servers `oomguard serve` builds (never started)."""
    from oomguard.api.service import ServerState

    seen: list[RunnerConfig] = []

    def start(self: ServerState) -> None:
        seen.append(self.runner.config)
        raise _Seen("seen")

    monkeypatch.setattr(ServerState, "start", start)
    return seen


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [([], {}, 5), (["--lost-retries", "3"], {}, 3), ([], {"OOMGUARD_LOST_RETRIES": "0"}, 0)],
)
def test_serve_lost_retries(
    tmp_path: Path,
    serve_config: list[RunnerConfig],
    args: list[str],
    env: dict[str, str],
    expected: int,
) -> None:
    store = str(tmp_path / "s.sqlite")
    result = _invoke(["serve", "--store", store, "--listen", "127.0.0.1:0", *args], env)
    assert result.exit_code == ExitCode.USAGE and "seen" in result.output, result.output
    assert [c.lost_retries for c in serve_config] == [expected]


@pytest.mark.parametrize("command", ["run", "serve"])
def test_negative_lost_retries_is_a_usage_error(
    run_args: list[str],
    run_config: list[RunnerConfig],
    serve_config: list[RunnerConfig],
    tmp_path: Path,
    command: str,
) -> None:
    args = run_args if command == "run" else ["serve", "--store", str(tmp_path / "x.sqlite")]
    result = _invoke([*args, "--lost-retries", "-1"])
    assert result.exit_code == ExitCode.USAGE
    assert "Invalid value for '--lost-retries'" in result.output, result.output
    assert "-1 is not in the range x>=0" in result.output
    assert run_config == [] and serve_config == []
