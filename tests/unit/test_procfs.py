"""The one /proc reader: a fake /proc in tmp_path, and the real one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from oomguard import procfs
from oomguard.scheduler import budget


def _stat(pid: int, comm: str, ppid: int, start: int) -> str:
    rest = ["S", str(ppid), "1", "1", "0", "-1", "4194560"] + ["0"] * 12 + [str(start)]
    return f"{pid} ({comm}) " + " ".join([*rest, "1000", "5"]) + "\n"


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    d = root / "42"
    d.mkdir(parents=True)
    (d / "stat").write_text(_stat(42, "a) (b c", 7, 123456))
    (d / "statm").write_text("2500 300 40 1 0 200 0\n")
    (d / "oom_score").write_text("667\n")
    (d / "oom_score_adj").write_text("-500\n")
    (d / "cmdline").write_bytes(b"python\0-c\0print('a b')\0")
    (d / "status").write_text(
        "Name:\tpython\nState:\tS (sleeping)\nCapEff:\t0000000001000000\nVmRSS:\t  1200 kB\n"
    )
    (root / "meminfo").write_text(
        "MemTotal:        8000000 kB\nMemFree:  100 kB\n"
        "SwapTotal:             0 kB\nHugePages_Total: 0\n"
    )
    return root


def test_reads_one_process(fake_proc: Path) -> None:
    assert procfs.read_stat(42, fake_proc) == ("a) (b c", 7, 4194560, 123456)
    assert procfs.process_start_time(42, fake_proc) == 123456
    assert procfs.rss_bytes(42, fake_proc) == 300 * procfs.page_size()
    assert procfs.oom_score(42, fake_proc) == 667
    assert procfs.oom_score_adj(42, fake_proc) == -500
    assert procfs.cmdline(42, fake_proc) == ("python", "-c", "print('a b')")
    assert procfs.status(42, fake_proc)["State"] == "S (sleeping)"
    assert procfs.cap_eff(42, fake_proc) == 1 << 24  # CAP_SYS_RESOURCE


def test_a_gone_or_cut_process_reads_as_none(fake_proc: Path) -> None:
    for pid in (43, "self"):
        assert procfs.read_stat(pid, fake_proc) is None
        assert procfs.rss_bytes(pid, fake_proc) is None
        assert procfs.oom_score_adj(pid, fake_proc) is None
        assert procfs.cmdline(pid, fake_proc) == ()
        assert procfs.status(pid, fake_proc) == {}
        assert procfs.cap_eff(pid, fake_proc) is None
    (fake_proc / "42" / "stat").write_text("42 (cut")
    (fake_proc / "42" / "statm").write_text("2500")
    (fake_proc / "42" / "status").write_text("CapEff:\tzz\n")
    assert procfs.process_start_time(42, fake_proc) is None
    assert procfs.rss_bytes(42, fake_proc) is None
    assert procfs.cap_eff(42, fake_proc) is None


def test_a_name_that_is_not_utf8_still_reads(fake_proc: Path) -> None:
    (fake_proc / "42" / "stat").write_bytes(_stat(42, "x", 7, 99).encode().replace(b"x", b"\xff"))
    stat = procfs.read_stat(42, fake_proc)
    assert stat is not None and stat[3] == 99 and stat[0] == "\ufffd"


def test_machine_memory(fake_proc: Path) -> None:
    info = procfs.meminfo(fake_proc)
    assert info["MemTotal"] == 8000000 * 1024 and info["SwapTotal"] == 0
    assert info["HugePages_Total"] == 0  # no unit: not scaled
    assert procfs.machine_memory_bytes(fake_proc) == 8000000 * 1024
    assert procfs.machine_memory_bytes(fake_proc / "missing") is None


def test_the_real_proc_agrees_with_the_scheduler_budget() -> None:
    me = procfs.read_stat(os.getpid())
    assert me is not None and me[1] == os.getppid()
    assert procfs.process_start_time("self") == me[3]
    rss = procfs.rss_bytes()
    assert rss is not None and rss > 0
    machine = procfs.machine_memory_bytes()
    assert machine is not None and budget.machine_memory() == machine > 0


def test_a_process_tree_and_its_rss(fake_proc: Path) -> None:
    # 42 has two threads with a child each (43, 44); 44 has a child 45; 46 is not in it.
    for pid, kids in ((42, {42: "43 ", 50: "44"}), (43, {43: ""}), (44, {44: "45 "})):
        for tid, text in kids.items():
            (fake_proc / str(pid) / "task" / str(tid)).mkdir(parents=True)
            (fake_proc / str(pid) / "task" / str(tid) / "children").write_text(text)
    for pid, pages in ((43, 100), (44, 10), (45, 1), (46, 1000)):
        (fake_proc / str(pid)).mkdir(exist_ok=True)
        (fake_proc / str(pid) / "statm").write_text(f"9 {pages} 0 0 0 0 0\n")
    assert sorted(procfs.children(42, fake_proc)) == [43, 44]
    assert procfs.children(45, fake_proc) == [] and procfs.children(99, fake_proc) == []
    assert procfs.tree_rss(42, fake_proc) == (300 + 100 + 10 + 1) * procfs.page_size()
    assert procfs.tree_rss(99, fake_proc) == 0


def test_the_real_tree_rss_counts_a_child() -> None:
    code = "import sys; sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        own = procfs.rss_bytes(os.getpid()) or 0
        assert child.pid in procfs.children(os.getpid())
        assert procfs.tree_rss(os.getpid()) > own
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()


def test_oom_score_adj_is_raised_never_lowered(fake_proc: Path) -> None:
    procfs.raise_oom_score_adj(800, 42, fake_proc)
    assert procfs.oom_score_adj(42, fake_proc) == 800
    procfs.raise_oom_score_adj(100, 42, fake_proc)
    assert procfs.oom_score_adj(42, fake_proc) == 800
