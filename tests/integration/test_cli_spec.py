"""Jobs as files: ``oomguard run study.toml`` (the CLI in a subprocess, real stores and
Parquet files). A grid spec writes the same Parquet as the equivalent params file; bad
specs are refused with the file, the line and the key (exit 2) and store nothing; --set
changes the file's keys and command-line options win over it."""

from __future__ import annotations

import itertools
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from oomguard.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from conftest import RunCli

pytestmark = pytest.mark.timeout(300)

SPEC = """\
# a 3 x 4 grid, 3 replicates each, and an aggregation per parameter set
task = "oomguard.examples:simulate"
aggregate = "oomguard.examples:mean_of"
replicates = 3
workers = 2
out = "spec-out"

[grid]
n_agents = [10, 20, 30]
steps = [1, 2, 3, 4]
"""


def _table(directory: Path) -> list[dict[str, Any]]:
    rows = pq.read_table(directory).to_pylist()
    for row in rows:
        row.pop("task_id")
    return sorted(rows, key=lambda r: (r["group"], r.get("replicate") or 0))


def test_a_grid_spec_writes_the_same_parquet_as_its_params_file(
    tmp_path: Path, cli: RunCli
) -> None:
    spec = tmp_path / "study.toml"
    spec.write_text(SPEC)
    res = cli("run", str(spec), "--store", str(tmp_path / "a.sqlite"), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["counts"]["succeeded"] == 48
    # Relative paths of a spec are relative to its directory.
    assert summary["out"] == str(tmp_path / "spec-out")

    params = tmp_path / "p.jsonl"
    params.write_text(
        "".join(
            json.dumps({"n_agents": n, "steps": s}) + "\n"
            for n, s in itertools.product([10, 20, 30], [1, 2, 3, 4])
        )
    )
    res = cli(
        "run",
        "oomguard.examples:simulate",
        "--params",
        str(params),
        "--replicates",
        "3",
        "--aggregate",
        "oomguard.examples:mean_of",
        "--workers",
        "2",
        "--store",
        str(tmp_path / "b.sqlite"),
        "--out",
        str(tmp_path / "file-out"),
        "--json",
    )
    assert res.returncode == 0, res.stderr

    for kind, count in (("tasks", 36), ("aggregates", 12)):
        from_spec = _table(tmp_path / "spec-out" / kind)
        from_file = _table(tmp_path / "file-out" / kind)
        assert len(from_spec) == count
        assert from_spec == from_file


def test_a_json_spec_with_rows_and_a_file_task(tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "work.py").write_text("def double(x):\n    return {'y': 2 * x}\n")
    spec = tmp_path / "job.json"
    spec.write_text(
        json.dumps(
            {
                "task": "work.py:double",
                "rows": [{"x": 1}, {"x": 5}],
                "out": "o",
                "workers": 1,
                "name": "doubling",
            }
        )
    )
    res = cli("run", str(spec), "--store", str(tmp_path / "s.sqlite"), "--json", cwd=Path("/"))
    assert res.returncode == 0, res.stderr
    first = json.loads(res.stdout)["job_id"]
    rows = sorted(pq.read_table(tmp_path / "o" / "tasks").to_pylist(), key=lambda r: r["x"])
    assert [(r["x"], r["y"]) for r in rows] == [(1, 2), (5, 10)]
    # Run again: the same named job is resumed, nothing runs twice.
    res = cli("run", str(spec), "--store", str(tmp_path / "s.sqlite"), "--json", cwd=Path("/"))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["job_id"] == first
    assert len(pq.read_table(tmp_path / "o" / "tasks")) == 2


def test_set_changes_the_file_and_the_command_line_wins(tmp_path: Path, cli: RunCli) -> None:
    spec = tmp_path / "study.toml"
    spec.write_text(SPEC.replace("replicates = 3", "replicates = 2"))
    res = cli(
        "run",
        str(spec),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--json",
        "--set",
        "grid.n_agents=[10]",
        "--set",
        "replicates=1",
        "--set",
        "aggregate=oomguard.examples:mean_of",
        "--out",
        str(tmp_path / "cli-out"),
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    # 1 x 4 groups of 1 replicate and an aggregation; --out given here beats out = ...
    assert summary["counts"]["succeeded"] == 8
    assert summary["out"] == str(tmp_path / "cli-out")
    assert not (tmp_path / "spec-out").exists()
    res = cli(
        "run",
        str(spec),
        "--store",
        str(tmp_path / "s2.sqlite"),
        "--json",
        "--set",
        "grid.n_agents=[10]",
        "--set",
        "grid.steps=[1]",
        "--replicates",
        "4",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["counts"]["succeeded"] == 5


@pytest.mark.parametrize(
    "name,text,sets,where",
    [
        (
            "unknown.toml",
            SPEC.replace("workers = 2", "wrokers = 2"),
            (),
            "unknown.toml:5: unknown key 'wrokers'",
        ),
        (
            "badvalue.toml",
            SPEC.replace("replicates = 3", "replicates = 0"),
            (),
            "badvalue.toml:4: replicates: 0 is not in the range x>=1",
        ),
        (
            "badsize.toml",
            SPEC + "",
            ("worker-memory=lots",),
            "badsize.toml: worker-memory: invalid memory size 'lots'",
        ),
        (
            "syntax.toml",
            SPEC.replace("steps = [1, 2, 3, 4]", "steps = [1, 2"),
            (),
            "syntax.toml:10: not valid TOML (Unclosed array)",
        ),
        ("table.toml", SPEC + "\n[other]\nx = 1\n", (), "table.toml:12: unknown key 'other'"),
        (
            "twosources.toml",
            'params = "p.jsonl"\n' + SPEC,
            (),
            "twosources.toml:9: grid: give one of params, rows or [grid], not params and grid",
        ),
        (
            "emptyaxis.toml",
            SPEC.replace("steps = [1, 2, 3, 4]", "steps = []"),
            (),
            "emptyaxis.toml:10: grid.steps: an empty list makes no rows",
        ),
        ("badset.toml", SPEC, ("worker=3",), "--set 'worker=3': unknown key 'worker'"),
        (
            "unknown.json",
            json.dumps(
                {"task": "oomguard.examples:noop", "rows": [{}], "out": "x"}, indent=1
            ).replace('"out"', '"output"'),
            (),
            "unknown.json:6: unknown key 'output'",
        ),
        (
            "rows.toml",
            'task = "oomguard.examples:noop"\nrows = [1, 2]\n',
            (),
            "rows.toml:2: rows[0]: expected a table of parameters",
        ),
        (
            "both.toml",
            'task = "oomguard.examples:noop"\nrows = [{x = 1}]\n[grid]\nx = [1]\n',
            (),
            "both.toml:3: grid: give one of params, rows or [grid], not rows and grid",
        ),
        (
            "none.toml",
            'task = "oomguard.examples:noop"\n',
            (),
            "no parameters: give --params, or params, rows or [grid] in a spec",
        ),
    ],
)
def test_bad_specs_are_refused_with_file_line_and_key(
    tmp_path: Path, cli: RunCli, name: str, text: str, sets: tuple[str, ...], where: str
) -> None:
    spec = tmp_path / name
    spec.write_text(text)
    store = tmp_path / "s.sqlite"
    args = [item for s in sets for item in ("--set", s)]
    res = cli("run", str(spec), "--store", str(store), *args)
    assert res.returncode == int(ExitCode.USAGE), (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    (line,) = [x for x in res.stderr.splitlines() if x.strip()]
    expected = where if where.startswith(("--set", "no ")) else f"{tmp_path}/{where}"
    assert line.startswith("oomguard: error: ") and expected in line, line
    assert not store.exists()  # nothing was stored


def test_a_spec_command_must_have_its_parameters(tmp_path: Path, cli: RunCli) -> None:
    spec = tmp_path / "cmd.toml"
    spec.write_text('cmd = ["echo", "{n}", "{seed}"]\nrows = [{n = 1}]\n')
    res = cli("run", str(spec), "--store", str(tmp_path / "s.sqlite"))
    assert res.returncode == int(ExitCode.PAYLOAD), res.stderr
    assert "parameter set 0 has no seed, which the command uses" in res.stderr
    assert not (tmp_path / "s.sqlite").exists()


def test_cmd_runs_a_program_from_the_command_line(tmp_path: Path, cli: RunCli) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text('{"word": "a b; c"}\n{"word": "d"}\n')
    code = "import json, sys; print(json.dumps(dict(got=sys.argv[1])))"
    cmd = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} {{word}}"
    res = cli(
        "run",
        "--cmd",
        cmd,
        "--params",
        str(params),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--out",
        str(tmp_path / "o"),
        "--workers",
        "1",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    rows = pq.read_table(tmp_path / "o" / "tasks").to_pylist()
    assert sorted(r["got"] for r in rows) == ["a b; c", "d"]
    res = cli("run", "oomguard.examples:noop", "--cmd", "true", "--params", str(params))
    assert res.returncode == int(ExitCode.USAGE) and "give TASK or --cmd, not both" in res.stderr


def test_a_spec_command_with_an_aggregation_gets_its_replicate(tmp_path: Path, cli: RunCli) -> None:
    code = "import json, sys; print(json.dumps(dict(v=int(sys.argv[1]) * 10 + int(sys.argv[2]))))"
    spec = tmp_path / "cmd.toml"
    spec.write_text(
        f"cmd = {json.dumps([sys.executable, '-c', code, '{n}', '{replicate}'])}\n"
        'aggregate = "oomguard.examples:mean_of"\nworkers = 1\nout = "o"\n'
        "rows = [{n = 1}, {n = 2}]\n"
    )
    res = cli("run", str(spec), "--store", str(tmp_path / "s.sqlite"), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["counts"]["succeeded"] == 4  # 2 tasks + 2 aggregations
    rows = sorted(pq.read_table(tmp_path / "o" / "aggregates").to_pylist(), key=lambda r: r["n"])
    assert [(r["n"], r["mean_v"]) for r in rows] == [(1, 10.0), (2, 20.0)]
