"""SIGTERM and Ctrl-C stop `oomguard run` and `oomguard serve` cleanly.

The real CLI in a subprocess, a task that would run for 30 s, a real signal: the process
exits with its documented code, the running attempt is recorded as ``interrupted``, the
scheduler's row says it stopped, and no worker process or worker cgroup is left.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from conftest import run_cli
from fixtures.cli_process import Running, exit_code, reap, start_run, start_serve
from oomguard.cli.exit_codes import ExitCode

pytestmark = pytest.mark.timeout(180)

CASES = [
    ("run", signal.SIGTERM, ExitCode.TERMINATED),
    ("run", signal.SIGINT, ExitCode.INTERRUPTED),
    ("serve", signal.SIGTERM, ExitCode.OK),
    ("serve", signal.SIGINT, ExitCode.INTERRUPTED),
]


@pytest.mark.parametrize(
    ("command", "signum", "code"), CASES, ids=[f"{c}-{s.name}" for c, s, _ in CASES]
)
def test_signal_stops_cleanly(
    tmp_path: Path, command: str, signum: signal.Signals, code: ExitCode
) -> None:
    store = tmp_path / "s.sqlite"
    started = start_run(tmp_path, store) if command == "run" else None
    try:
        if started is None:
            started = start_serve(tmp_path, store)
        running = Running(started, store)
        started.proc.send_signal(signum)
        assert exit_code(started, timeout=60) == code, started.output()
        err = started.output()
        assert "Traceback" not in err, err
        running.assert_cleaned_up(started, store)
        if command == "run":
            # How far it got and how to go on; the job is `interrupted`, not `running`.
            how = "interrupted" if signum == signal.SIGINT else "terminated"
            assert f"oomguard: {how}: job " in err, err
            assert (
                ": 0 of 1 tasks done; the attempts that were running ended as "
                "interrupted and run again; run the same command to resume" in err
            ), err
            status = run_cli("status", "--store", str(store))
            assert status.returncode == 0, status.stderr
            assert status.stdout.splitlines()[0].endswith(": interrupted"), status.stdout
    finally:
        if started is not None:
            reap(started)
