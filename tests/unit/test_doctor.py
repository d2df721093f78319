"""Doctor checks against fake /proc and cgroup trees, with the kernel probes injected."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.fake_cgroup import V2_FILES, install_fake_kernel, make_proc, write_files
from oomguard.cgroups import cgroup
from oomguard.diagnosis.doctor import DoctorReport, run_doctor

GiB = 1024**3


def _doctor(
    tmp_path: Path,
    *,
    cap: str = "000001fffeffffff",
    swap: int = 0,
    limit: str = str(2 * GiB),
    oom_group: str = "0",
    **kw: int | None,
) -> DoctorReport:
    me = os.getpid()
    proc = make_proc(
        tmp_path / "proc",
        me,
        "0::/ctr\n",
        extra={
            "meminfo": f"MemTotal: {8 * 1024 * 1024} kB\nSwapTotal: {swap} kB\n",
            f"{me}/status": f"Name: x\nCapEff:\t{cap}\n",
            "sys/vm/overcommit_memory": "1\n",
            "sys/kernel/dmesg_restrict": "1\n",
        },
    )
    root = write_files(tmp_path / "cg", {"cgroup.controllers": "memory"})
    write_files(root / "ctr", {**V2_FILES, "memory.max": limit, "memory.oom.group": oom_group})
    return run_doctor(
        proc_root=proc,
        cgroup_root=root,
        pid=me,
        kmsg_probe=lambda: (False, "/dev/kmsg cannot be opened"),
        score_adj_probe=lambda: (True, "raised"),
        which=lambda name: None,
        **kw,
    )


def _by_name(report: DoctorReport) -> dict[str, tuple[str, str]]:
    return {f.name: (f.status, f.found) for f in report.findings}


def test_findings_on_a_fake_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_kernel(monkeypatch, 2)
    report = _doctor(tmp_path, memory_budget=GiB, worker_memory=GiB // 2)
    found = _by_name(report)
    assert report.ok
    assert found["isolation"][0] == "ok"
    assert found["kernel_log"][0] == "warn" and "dmesg_restrict=1" in found["kernel_log"][1]
    assert found["oom_score_adj_lower"][0] == "warn"  # bit 24 clear in CapEff
    assert found["overcommit"][0] == "warn"
    assert found["psi"][0] == "warn"  # no /proc/pressure/memory in the fake
    assert found["memory_budget"][0] == "ok"
    data = report.to_json()
    assert set(data) == {"isolation", "findings", "ok"}
    assert data["isolation"]["mode"] == "cgroup-v2"  # type: ignore[index]


def test_budget_over_the_container_limit_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_kernel(monkeypatch, 2)
    report = _doctor(
        tmp_path, memory_budget=4 * GiB, worker_memory=16 * GiB, limit="max", cap="000001ffffffffff"
    )
    found = _by_name(report)
    assert not report.ok
    assert found["oom_score_adj_lower"][0] == "ok"
    assert found["memory_budget"][0] == "ok"  # no container limit, fits the machine
    assert found["worker_memory"][0] == "error"
    assert "this machine's memory (8GiB)" in found["worker_memory"][1]
    report = _doctor(tmp_path, memory_budget=4 * GiB)
    assert "memory limit of oomguard's cgroup (2GiB)" in _by_name(report)["memory_budget"][1]


def test_watchdog_and_oom_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cgroup, "_mkdir", denied)
    report = _doctor(tmp_path, oom_group="1", swap=1024)
    found = _by_name(report)
    assert report.isolation.mode == "watchdog"
    assert found["isolation"][0] == "warn"
    assert found["oom_group"][0] == "warn"
    assert "kill the whole container" in report.findings[1].action
    assert found["swap"][0] == "ok"
    assert report.ok
