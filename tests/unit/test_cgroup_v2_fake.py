"""cgroup v2 detection and worker cgroups against a fake /sys/fs/cgroup tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.fake_cgroup import (
    V2_FILES,
    install_fake_kernel,
    make_proc,
    stat_line,
    v2_mountinfo,
    write_files,
)
from oomguard.cgroups import cgroup
from oomguard.cgroups.cgroup import CgroupCounters, MemoryCgroup, classify_counters
from oomguard.cgroups.detect import detect_isolation
from oomguard.cgroups.workers import WorkerCgroups, remove_leftovers
from oomguard.errors import IsolationError

OWN = "/kubepods/pod1/ctr"
GiB = 1024**3


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """(proc_root, cgroup_root, own dir): our process alone in a delegated v2 cgroup."""
    me = os.getpid()
    proc = make_proc(tmp_path / "proc", me, f"0::{OWN}\n", mountinfo=v2_mountinfo())
    root = write_files(tmp_path / "cg", {"cgroup.controllers": "cpu memory pids"})
    write_files(root / "kubepods", {**V2_FILES, "memory.max": str(8 * GiB)})
    write_files(root / "kubepods/pod1", {**V2_FILES, "memory.max": str(GiB)})
    own = write_files(root / OWN.lstrip("/"), {**V2_FILES, "cgroup.procs": f"{me}\n"})
    install_fake_kernel(monkeypatch, 2)
    return proc, root, own


def test_detect_delegated_cgroup_with_only_our_process(tree: tuple[Path, Path, Path]) -> None:
    proc, root, own = tree
    plan = detect_isolation(proc_root=proc, cgroup_root=root)
    assert plan.mode == "cgroup-v2"
    assert plan.own_cgroup == own
    assert plan.own_limit_bytes == GiB  # the pod's limit; the container's is "max"
    assert plan.own_oom_group is False
    assert "oomguard-scheduler" in plan.reason
    assert plan.warnings == ()
    assert [p.name for p in own.iterdir() if p.is_dir()] == []  # the probe was removed
    assert plan.to_json()["own_cgroup"] == str(own)


def test_create_moves_only_our_process_to_a_leaf_and_enables_memory(
    tree: tuple[Path, Path, Path],
) -> None:
    proc, root, own = tree
    plan = detect_isolation(proc_root=proc, cgroup_root=root)
    workers = WorkerCgroups.create(plan, proc_root=proc)
    me = os.getpid()
    assert (own / "oomguard-scheduler" / "cgroup.procs").read_text() == str(me)
    assert (own / "cgroup.subtree_control").read_text() == "+memory"
    assert workers.run_dir == own / f"oomguard-{me}-1000"
    assert (workers.run_dir / "cgroup.subtree_control").read_text() == "+memory"

    worker = workers.new_worker("worker-0", 64 * 1024**2)
    assert worker.version == 2
    assert (worker.path / "memory.max").read_text() == str(64 * 1024**2)
    assert (worker.path / "memory.swap.max").read_text() == "0"
    assert (worker.path / "memory.oom.group").read_text() == "1"
    worker.set_limit(None)
    assert (worker.path / "memory.max").read_text() == "max"

    workers.remove_all()
    assert not workers.run_dir.exists()


def test_foreign_process_in_own_cgroup_falls_back_to_watchdog(
    tree: tuple[Path, Path, Path],
) -> None:
    proc, root, own = tree
    (own / "cgroup.procs").write_text(f"{os.getpid()}\n1\n77\n")
    plan = detect_isolation(proc_root=proc, cgroup_root=root)
    assert plan.mode == "watchdog"
    assert "not oomguard's (1, 77)" in plan.reason
    with pytest.raises(IsolationError, match="not oomguard's"):
        detect_isolation("cgroup", proc_root=proc, cgroup_root=root)


def test_memory_already_enabled_means_no_leaf_move(tree: tuple[Path, Path, Path]) -> None:
    proc, root, own = tree
    (own / "cgroup.subtree_control").write_text("memory")
    (own / "cgroup.procs").write_text("")
    plan = detect_isolation(proc_root=proc, cgroup_root=root)
    assert plan.mode == "cgroup-v2"
    WorkerCgroups.create(plan, proc_root=proc).remove_all()
    assert not (own / "oomguard-scheduler").exists()


def test_oom_group_warning_when_no_subcgroups_can_be_made(
    tree: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, root, own = tree
    (own / "memory.oom.group").write_text("1\n")

    def denied(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cgroup, "_mkdir", denied)
    plan = detect_isolation(proc_root=proc, cgroup_root=root)
    assert plan.mode == "watchdog"
    assert plan.reason.startswith("no writable memory cgroup: ")
    assert plan.own_oom_group is True
    assert len(plan.warnings) == 1
    assert plan.warnings[0].startswith("a worker OOM will kill the whole container")
    with pytest.raises(IsolationError, match="no writable memory cgroup"):
        detect_isolation("cgroup", proc_root=proc, cgroup_root=root)


def test_oom_group_softer_warning_with_worker_cgroups(tree: tuple[Path, Path, Path]) -> None:
    proc, root, own = tree
    (own / "memory.oom.group").write_text("1\n")
    plan = detect_isolation(proc_root=proc, cgroup_root=root)
    assert plan.mode == "cgroup-v2"
    assert "container limit itself" in plan.warnings[0]


def test_no_memory_controller_and_watchdog_mode(tree: tuple[Path, Path, Path]) -> None:
    proc, root, own = tree
    assert detect_isolation("watchdog", proc_root=proc, cgroup_root=root).mode == "watchdog"
    (own / "cgroup.controllers").write_text("cpu pids")
    plan = detect_isolation(proc_root=proc, cgroup_root=root)
    assert plan.mode == "watchdog"
    assert "memory controller not available" in plan.reason
    with pytest.raises(IsolationError, match="unknown isolation mode"):
        detect_isolation("bogus", proc_root=proc, cgroup_root=root)


def test_counters_and_classification(tmp_path: Path) -> None:
    d = write_files(tmp_path / "w", {**V2_FILES, "memory.max": "max", "memory.current": "5"})
    cg = MemoryCgroup(d, 2)
    before = cg.counters()
    assert before == CgroupCounters(
        oom=0, oom_kill=0, usage_bytes=5, peak_bytes=0, limit_bytes=None
    )
    (d / "memory.events").write_text("low 0\nhigh 2\nmax 9\noom 1\noom_kill 1\n")
    assert classify_counters(before, cg.counters()) == "oom_cgroup"
    # The limit hit was an ancestor's: oom_kill rose here (hierarchical), oom did not.
    (d / "memory.events").write_text("oom 0\noom_kill 1\n")
    assert classify_counters(before, cg.counters()) == "oom_ancestor"
    (d / "memory.events").write_text("oom 1\noom_kill 0\n")
    assert classify_counters(before, cg.counters()) is None
    assert cg.counters().to_json()["oom"] == 1


def test_reset_peak_reads_through_the_same_fd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_kernel(monkeypatch, 2)
    d = write_files(tmp_path / "w", {**V2_FILES, "memory.peak": "4096\n"})
    cg = MemoryCgroup(d, 2)
    assert cg.reset_peak() is True
    # A fake file keeps what was written; the kernel would answer the current usage.
    (d / "memory.peak").write_text("123\n")
    assert cg.counters().peak_bytes == 123
    cg.remove()  # closes the fd
    assert not d.exists()
    # A kernel before 6.12 refuses to open memory.peak for writing; here: no such file.
    old = write_files(tmp_path / "old", {"memory.current": "0"})
    assert MemoryCgroup(old, 2).reset_peak() is False


def test_kill_all_uses_cgroup_kill(tmp_path: Path) -> None:
    d = write_files(tmp_path / "w", {**V2_FILES, "cgroup.kill": ""})
    MemoryCgroup(d, 2).kill_all()
    assert (d / "cgroup.kill").read_text() == "1"


def test_leftovers_of_dead_runs_are_removed(
    tree: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, _, own = tree
    write_files(proc / "4242", {"stat": stat_line(4242, 7)})
    dead = write_files(own / "oomguard-99999-5", V2_FILES)
    write_files(dead / "worker-0", V2_FILES)
    reused = write_files(own / "oomguard-4242-8", V2_FILES)  # pid 4242 now started at 7
    alive = write_files(own / "oomguard-4242-7", V2_FILES)
    other = write_files(own / "something-else", V2_FILES)
    removed = remove_leftovers(own, 2, proc_root=proc)
    assert sorted(removed) == sorted([dead, reused])
    assert alive.exists() and other.exists()


def test_worker_name_validation(tree: tuple[Path, Path, Path]) -> None:
    proc, root, _ = tree
    workers = WorkerCgroups.create(
        detect_isolation(proc_root=proc, cgroup_root=root), proc_root=proc
    )
    with pytest.raises(IsolationError):
        workers.new_worker("../escape", None)
    workers.remove_all()
    with pytest.raises(IsolationError, match="cgroup isolation plan"):
        WorkerCgroups.create(detect_isolation("watchdog", proc_root=proc, cgroup_root=root))


def test_two_subtrees_in_one_process_never_share_workers(tree: tuple[Path, Path, Path]) -> None:
    """Two Runners (or a Runner and an Executor) in one process: each has its own run
    subtree, so worker names never collide and one closing leaves the other's workers."""
    proc, root, own = tree
    plan = detect_isolation(proc_root=proc, cgroup_root=root)
    first = WorkerCgroups.create(plan, proc_root=proc)
    second = WorkerCgroups.create(plan, proc_root=proc)
    me = os.getpid()
    assert first.run_dir == own / f"oomguard-{me}-1000"
    assert second.run_dir == own / f"oomguard-{me}-1000-1"
    a = first.new_worker("w1", 64 * 1024**2)
    b = second.new_worker("w1", 64 * 1024**2)
    assert a.path != b.path

    first.remove_all()
    assert not first.run_dir.exists()
    assert b.path.is_dir()
    # The name is free again, and a crashed run's leftovers are still recognised by pid.
    third = WorkerCgroups.create(plan, proc_root=proc)
    assert third.run_dir == first.run_dir
    third.remove_all()
    second.remove_all()
    assert [p.name for p in own.iterdir() if p.name.startswith("oomguard-")] == [
        "oomguard-scheduler"
    ]


def test_counter_files_kept_open_read_what_counters_reads(tmp_path: Path) -> None:
    """v2: events, current and max through files kept open, the peak through the file
    its reset was written to, as MemoryCgroup.counters reads them."""
    from oomguard.cgroups.workers import CounterFiles

    d = write_files(tmp_path / "w", {**V2_FILES, "memory.max": str(64 * 1024**2)})
    cg = MemoryCgroup(d, 2)
    files = CounterFiles(cg)
    assert files.counters() == cg.counters()
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    (d / "memory.current").write_text("4096")
    (d / "memory.peak").write_text("8192")
    (d / "memory.max").write_text("max")
    after = files.counters()
    assert after == cg.counters()
    assert (after.oom, after.oom_kill, after.usage_bytes, after.peak_bytes) == (1, 1, 4096, 8192)
    assert after.limit_bytes is None
    files.close()
