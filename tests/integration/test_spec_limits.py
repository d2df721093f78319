"""Spec files that would exhaust the reader (cli/spec.py): a [grid] of 10^7 rows in under
a kilobyte, 100,000 nested brackets. The real CLI, under a 1 GiB address-space limit,
refuses each with exit 2 and file:line, and leaves no store behind."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from oomguard.cli.exit_codes import ExitCode

pytestmark = pytest.mark.timeout(120)


def _limited() -> None:
    # Building 10^7 rows takes gigabytes: under this limit it would die of MemoryError.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def _run(tmp_path: Path, spec: Path, *verb: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "oomguard.cli.main",
            *(verb or ("run",)),
            str(spec),
            "--store",
            str(tmp_path / "s.sqlite"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limited,
        cwd=tmp_path,
    )


def test_a_grid_is_counted_before_its_rows_are_built(tmp_path: Path) -> None:
    spec = tmp_path / "study.toml"
    axes = "\n".join(f"a{i} = [{', '.join(str(n) for n in range(10))}]" for i in range(7))
    spec.write_text(f'task = "oomguard.examples:noop"\n\n[grid]\n{axes}\n')
    assert spec.stat().st_size < 1000
    res = _run(tmp_path, spec)
    assert res.returncode == ExitCode.USAGE, res.stderr
    assert f"{spec}:3: [grid] makes 10,000,000 rows, more than the 1,000,000" in res.stderr
    assert "params file" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "s.sqlite").exists()


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_deep_nesting_is_refused_with_file_and_line(tmp_path: Path, suffix: str) -> None:
    spec = tmp_path / f"study{suffix}"
    deep = "[" * 100_000 + "]" * 100_000
    if suffix == ".json":
        spec.write_text('{"task": "oomguard.examples:noop",\n"rows": ' + deep + "}\n")
    else:
        spec.write_text('task = "oomguard.examples:noop"\nrows = ' + deep + "\n")
    res = _run(tmp_path, spec)
    assert res.returncode == ExitCode.USAGE, res.stderr
    assert f"{spec}:2: nested too deeply to read (RecursionError)" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
