"""cgroup v1 parsing, limits and detection against a fake memory hierarchy."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.fake_cgroup import (
    V1_FILES,
    V1_UNLIMITED,
    install_fake_kernel,
    make_proc,
    v1_mountinfo,
    v2_mountinfo,
    write_files,
)
from oomguard.cgroups import cgroup, v1
from oomguard.cgroups.cgroup import MemoryCgroup, classify_counters
from oomguard.cgroups.detect import detect_isolation
from oomguard.cgroups.workers import CounterFiles, WorkerCgroups
from oomguard.errors import IsolationError

MiB = 1024**2


def test_oom_control_with_and_without_oom_kill() -> None:
    assert v1.parse_oom_control("oom_kill_disable 0\nunder_oom 1\noom_kill 3\n") == {
        "oom_kill_disable": 0,
        "under_oom": 1,
        "oom_kill": 3,
    }
    assert "oom_kill" not in v1.parse_oom_control("oom_kill_disable 0\nunder_oom 0\n")


def test_unlimited_value_reads_as_none() -> None:
    assert v1.parse_limit(str(V1_UNLIMITED)) is None
    assert v1.parse_limit("9223372036854710272\n") is None  # 64 KiB pages
    assert v1.parse_limit("67108864\n") == 64 * MiB


def test_counters_on_old_kernel_without_oom_kill(tmp_path: Path) -> None:
    d = write_files(tmp_path / "w", {**V1_FILES, "memory.oom_control": "under_oom 0\n"})
    c = MemoryCgroup(d, 1).counters()
    assert c.oom is None and c.oom_kill is None and c.limit_bytes is None
    assert classify_counters(c, c) is None


def test_counters_and_classification(tmp_path: Path) -> None:
    d = write_files(
        tmp_path / "w",
        {
            **V1_FILES,
            "memory.limit_in_bytes": str(64 * MiB),
            "memory.max_usage_in_bytes": str(63 * MiB),
        },
    )
    cg = MemoryCgroup(d, 1)
    before = cg.counters()
    assert before.limit_bytes == 64 * MiB and before.peak_bytes == 63 * MiB
    (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert classify_counters(before, cg.counters()) == "oom_cgroup"
    assert cg.reset_peak() is True
    assert (d / "memory.max_usage_in_bytes").read_text() == "0"


def test_counter_files_kept_open_read_what_counters_reads(tmp_path: Path) -> None:
    """The pool's and the worker's reads through files kept open: the same snapshot as a
    read by path, following the files as they change; a file that cannot be opened makes
    them read by path."""
    d = write_files(tmp_path / "w", {**V1_FILES, "memory.limit_in_bytes": str(64 * MiB)})
    cg = MemoryCgroup(d, 1)
    files = CounterFiles(cg)
    assert files.counters() == cg.counters()
    (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (d / "memory.usage_in_bytes").write_text(str(3 * MiB))
    (d / "memory.max_usage_in_bytes").write_text(str(5 * MiB))
    (d / "memory.limit_in_bytes").write_text(str(V1_UNLIMITED))
    after = files.counters()
    assert after == cg.counters()
    assert (after.oom_kill, after.usage_bytes, after.peak_bytes) == (2, 3 * MiB, 5 * MiB)
    assert after.limit_bytes is None
    files.close()
    assert files.counters() == cg.counters()
    (d / "memory.max_usage_in_bytes").unlink()
    partial = CounterFiles(cg)
    assert partial.counters() == cg.counters() and partial.counters().peak_bytes is None


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    log: list[tuple[str, str]] = []
    real = cgroup._write

    def recording(path: Path, value: str) -> None:
        log.append((path.name, value))
        real(path, value)

    monkeypatch.setattr(cgroup, "_write", recording)
    return log


def test_memsw_written_first_when_growing_last_when_shrinking(
    tmp_path: Path, writes: list[tuple[str, str]]
) -> None:
    d = write_files(
        tmp_path / "w",
        {
            **V1_FILES,
            "memory.limit_in_bytes": str(64 * MiB),
            "memory.memsw.limit_in_bytes": str(64 * MiB),
        },
    )
    cg = MemoryCgroup(d, 1)
    cg.set_limit(128 * MiB)
    assert writes == [
        ("memory.memsw.limit_in_bytes", str(128 * MiB)),
        ("memory.limit_in_bytes", str(128 * MiB)),
    ]
    writes.clear()
    cg.set_limit(32 * MiB)
    assert writes == [
        ("memory.limit_in_bytes", str(32 * MiB)),
        ("memory.memsw.limit_in_bytes", str(32 * MiB)),
    ]
    writes.clear()
    cg.set_limit(None)
    assert writes == [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]


def test_no_memsw_file_means_limit_only(tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    files = {k: v for k, v in V1_FILES.items() if "memsw" not in k}
    cg = MemoryCgroup(write_files(tmp_path / "w", files), 1)
    cg.set_limit(64 * MiB)
    assert writes == [("memory.limit_in_bytes", str(64 * MiB))]


def test_lowering_below_usage_ebusy_raises_with_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = write_files(
        tmp_path / "w",
        {
            **V1_FILES,
            "memory.limit_in_bytes": str(256 * MiB),
            "memory.usage_in_bytes": str(200 * MiB),
        },
    )

    def busy(path: Path, value: str) -> None:
        raise OSError(errno.EBUSY, "Device or resource busy", str(path))

    monkeypatch.setattr(cgroup, "_write", busy)
    with pytest.raises(IsolationError) as info:
        MemoryCgroup(d, 1).set_limit(64 * MiB)
    assert info.value.data["usage_bytes"] == 200 * MiB
    assert info.value.data["limit_bytes"] == 64 * MiB
    assert "EBUSY" in str(info.value)


def test_detect_v1_via_mountinfo_at_unusual_place_with_bind_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = os.getpid()
    # A container that sees the host path /docker/abc bind-mounted at /cgroup/memory; the
    # cgroup2 mount has no memory controller (a hybrid host, like this one).
    mounts = v2_mountinfo("/sys/fs/cgroup/unified") + v1_mountinfo("/cgroup/memory", "/docker/abc")
    proc = make_proc(tmp_path / "proc", me, "4:memory:/docker/abc\n0::/\n", mountinfo=mounts)
    root = tmp_path / "cg"
    write_files(root / "unified", {"cgroup.controllers": "hugetlb", "cgroup.procs": ""})
    own = write_files(root / "cgroup/memory", {**V1_FILES, "memory.limit_in_bytes": str(MiB)})
    install_fake_kernel(monkeypatch, 1)
    plan = detect_isolation(proc_root=proc, cgroup_root=root)
    assert plan.mode == "cgroup-v1"
    assert plan.own_cgroup == own
    assert plan.own_limit_bytes == MiB
    assert plan.own_oom_group is None
    workers = WorkerCgroups.create(plan, proc_root=proc)
    w = workers.new_worker("worker-1", 64 * MiB)
    assert (w.path / "memory.limit_in_bytes").read_text() == str(64 * MiB)
    assert not (w.path / "memory.oom.group").exists()
    workers.remove_all()
    assert [p for p in own.iterdir() if p.is_dir()] == []
