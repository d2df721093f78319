"""Command tasks (oomguard.jobs.command): templates, argument lists, results, failures.

Real programs are run (the Python interpreter with a small script); no shell is involved
unless asked for.
"""

from __future__ import annotations

import pickle
import signal
import sys
from pathlib import Path

import pytest

from oomguard.errors import ConfigError, PayloadError
from oomguard.jobs.command import (
    Command,
    CommandFailed,
    command,
    from_reference,
    is_command,
    label,
)
from oomguard.jobs.task import load, reference_of

PROGRAM = str(Path(__file__).resolve().parent.parent / "fixtures" / "alloc_program.py")


def test_a_command_line_becomes_an_argument_list_and_a_reference() -> None:
    cmd = command("simulate --agents {n_agents} --seed {replicate}")
    assert cmd.argv == ("simulate", "--agents", "{n_agents}", "--seed", "{replicate}")
    assert cmd.fields == {"n_agents", "replicate"}
    assert cmd.args({"n_agents": 10, "replicate": 2}) == [
        "simulate",
        "--agents",
        "10",
        "--seed",
        "2",
    ]
    ref = reference_of(cmd)
    assert is_command(ref)
    assert from_reference(ref) == cmd
    assert load(ref) == cmd


def test_a_parameter_is_one_argument_never_shell_text(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cmd = command([sys.executable, PROGRAM, "1", "--label", "{label}"])
    evil = f"x; touch {marker}"
    result = cmd(label=evil)
    assert result["label"] == evil
    assert not marker.exists()


def test_with_shell_values_are_quoted_for_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    reader = "import sys, json; print(json.dumps(dict(got=sys.stdin.read().strip())))"
    cmd = command(f"echo {{text}} | {sys.executable} -c '{reader}'", shell=True)
    result = cmd(text=f"a; touch {marker}")
    assert result["got"] == f"a; touch {marker}"
    assert not marker.exists()


def test_the_result_is_the_last_json_line_exit_status_and_stderr_tail() -> None:
    result = command([sys.executable, PROGRAM, "{mib}"])(mib=2)
    assert result["allocated_mib"] == 2
    # The program's own key of a reserved name is kept, beside oomguard's.
    assert result["stdout.exit_status"] == "mine"
    assert result["exit_status"] == 0
    assert result["stderr_tail"] == "allocated 2 MiB\n"


def test_no_json_on_the_last_line_leaves_only_status_and_stderr() -> None:
    # Literal braces of a template are doubled, as in str.format.
    result = command([sys.executable, "-c", "print('{{not json')"])()
    assert result == {"exit_status": 0, "stderr_tail": ""}


def test_a_non_zero_exit_fails_with_the_stderr_tail() -> None:
    with pytest.raises(CommandFailed) as info:
        command([sys.executable, PROGRAM, "1", "--exit", "3"])()
    err = info.value
    assert err.data["exit_status"] == 3
    stderr_tail = err.data["stderr_tail"]
    assert isinstance(stderr_tail, str) and "failing with 3" in stderr_tail
    assert str(err).startswith("command exited with status 3; stderr: allocated 1 MiB")
    # It crosses process boundaries (worker -> scheduler) intact.
    again = pickle.loads(pickle.dumps(err))
    assert again.data == err.data and str(again) == str(err)


def test_a_program_killed_by_a_signal_says_which_and_its_pid() -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    with pytest.raises(CommandFailed) as info:
        command([sys.executable, "-c", code])()
    assert info.value.data["signal"] == signal.SIGKILL
    assert isinstance(info.value.data["command_pid"], int)
    assert "killed by SIGKILL" in str(info.value)


def test_stderr_is_kept_as_a_tail_only() -> None:
    code = "import sys; sys.stderr.write('x' * 100000 + 'END')"
    result = command([sys.executable, "-c", code])()
    tail = result["stderr_tail"]
    assert isinstance(tail, str) and len(tail) == 4096 and tail.endswith("END")


def test_a_program_that_cannot_start_fails_saying_so() -> None:
    with pytest.raises(CommandFailed, match="cannot start '/nonexistent/prog'"):
        command(["/nonexistent/prog"])()


@pytest.mark.parametrize(
    "cmd,shell,words",
    [
        ([], False, "non-empty list"),
        (["a", "b"], True, "one string"),
        (["prog", "{0}"], False, "not a parameter name"),
        (["prog", "{a.b}"], False, "not a parameter name"),
        ("prog 'unclosed", False, "cannot be split"),
    ],
)
def test_bad_commands_are_refused(cmd: list[str] | str, shell: bool, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        command(cmd, shell)


def test_a_missing_parameter_is_named() -> None:
    with pytest.raises(PayloadError, match="needs parameter 'seed'"):
        Command(("prog", "{seed}")).args({"n": 1})


def test_a_command_is_labelled_by_its_program() -> None:
    assert label(command(["/opt/sim/bin/simulate", "{n}"]).reference) == "cmd:simulate"
    assert label(command("Rscript fit.R {n}", shell=True).reference) == "cmd:Rscript"
    assert label("oomguard.examples:noop") == "oomguard.examples:noop"


def test_stdout_without_newlines_is_read_in_linear_time() -> None:
    # 64 MiB in one line on stdout costs about what it costs on stderr (each chunk was
    # split again together with the whole line so far: 25 times the cost).
    import time

    from oomguard.jobs.command import run

    def timed(stream: str) -> float:
        code = f"import sys; sys.{stream}.buffer.write(b'x' * (64 << 20))"
        t0 = time.perf_counter()
        run([sys.executable, "-c", code])
        return time.perf_counter() - t0

    timed("stderr")  # warm the page cache and the interpreter
    err = min(timed("stderr") for _ in range(2))
    out = min(timed("stdout") for _ in range(2))
    assert out < 3 * err + 0.2, (out, err)


def test_the_reading_ends_when_the_program_exits_not_its_leftover() -> None:
    # The program leaves a process that holds its stdout open for 30 s: the attempt
    # takes what the program wrote and ends when the program does.
    import os

    from oomguard.jobs.command import run

    code = (
        "import subprocess, sys; p = subprocess.Popen(['sleep', '30']); "
        "print('{\"left\": %d}' % p.pid, flush=True)"
    )
    result = run([sys.executable, "-c", code])
    left = result["left"]
    assert isinstance(left, int)
    try:
        assert result["exit_status"] == 0 and left > 0
        # The attempt ended while the leftover still lives and holds the program's stdout.
        os.kill(left, 0)
    finally:
        os.kill(left, signal.SIGKILL)
