"""Any program as a task, under the real OOM killer: a command sweep (``run --cmd``, the
CLI in a subprocess) over a program that allocates memory by argument. The large ones are
OOM-killed in their worker's cgroup while the worker lives on, classified ``oom_cgroup``
with the kernel's ``Killed process`` line, escalated, and either succeed with more memory
or end ``needs_more_memory``; the JSON of the program's last line becomes Parquet columns.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from oomguard.store.records import AttemptSpan
from oomguard.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from conftest import RunCli

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]
PROGRAM = Path(__file__).resolve().parent.parent / "fixtures" / "alloc_program.py"
MIB = 1024**2


def test_command_sweep_is_oom_killed_escalated_and_classified(
    tmp_path: Path, cli: RunCli, require_cgroup: None
) -> None:
    params = tmp_path / "p.jsonl"
    sizes = [10, 20, 200, 900]
    params.write_text("".join(json.dumps({"mib": m}) + "\n" for m in sizes))
    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    cmd = f"{shlex.quote(sys.executable)} {shlex.quote(str(PROGRAM))} {{mib}} --label m{{mib}}"
    res = cli(
        "run",
        "--cmd",
        cmd,
        "--params",
        str(params),
        "--store",
        str(store),
        "--workers",
        "2",
        "--task-memory",
        "128MiB",
        "--worker-memory",
        "512MiB",
        "--memory-key",
        "mib",
        "--out",
        str(out),
        "--json",
    )
    assert res.returncode == 1, res.stderr  # one task failed for good
    summary = json.loads(res.stdout)
    assert summary["counts"]["succeeded"] == 3 and summary["counts"]["failed"] == 1

    st = SqliteStore(str(store))
    try:
        attempts = list(st.queries.all_attempts(summary["job_id"]))
        (failure,) = st.queries.failed_tasks(summary["job_id"], None)
    finally:
        st.close()
    by_mib: dict[int, list[AttemptSpan]] = {}
    for a in attempts:
        assert a.memory_key is not None, a
        by_mib.setdefault(int(a.memory_key.rpartition("=")[2]), []).append(a)

    # 900 MiB never fits the 512 MiB a worker may have: OOM-killed at the cap, then no more.
    assert failure.params == {"mib": 900}
    assert failure.failure_class == "needs_more_memory"
    kills = [a for a in failure.attempts if a.failure_class == "oom_cgroup"]
    assert kills and kills[-1].limit_bytes == 512 * MIB
    for kill in kills:
        evidence = kill.evidence
        assert isinstance(evidence, dict), evidence
        assert evidence["survivor"] is True  # the program died, its worker did not
        pid = evidence["command_pid"]
        lines = evidence["kernel_lines"]
        assert isinstance(lines, list), evidence
        assert any(isinstance(line, str) and f"Killed process {pid} " in line for line in lines), (
            evidence
        )
        kernel = evidence["kernel"]
        assert isinstance(kernel, dict), evidence
        assert kernel["victim_pid"] == pid
        oom_kills = evidence["cgroup_oom_kill"]
        assert isinstance(oom_kills, list), evidence
        before, after = oom_kills[0], oom_kills[1]
        assert isinstance(before, int), evidence
        assert after == before + 1

    # 200 MiB is killed with the limit the declared 128 MiB gave it, then succeeds with more.
    mid = sorted(by_mib[200], key=lambda a: a.attempt_id)
    assert mid[0].limit_bytes is not None and mid[-1].limit_bytes is not None, mid
    assert mid[0].failure_class == "oom_cgroup" and mid[0].limit_bytes < 200 * MIB
    assert mid[-1].state == "succeeded" and mid[-1].limit_bytes > 200 * MIB

    # The small ones ran once, and the program's JSON is in the Parquet columns.
    assert all(len(by_mib[m]) == 1 for m in (10, 20))
    rows = {r["mib"]: r for r in pq.read_table(out / "tasks").to_pylist()}
    assert set(rows) == {10, 20, 200}
    assert rows[200]["allocated_mib"] == 200 and rows[200]["label"] == "m200"
    assert rows[200]["exit_status"] == 0 and rows[200]["stdout.exit_status"] == "mine"
    assert rows[10]["stderr_tail"] == "allocated 10 MiB\n"
