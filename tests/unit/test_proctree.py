"""The process tree: a fake /proc in tmp_path, and the real one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oomguard.diagnosis import proctree
from oomguard.diagnosis.proctree import build_tree, parse_memcg, parse_stat, read_process, walk_tree


def _stat(pid: int, comm: str, ppid: int, start: int, flags: int = 0) -> str:
    # Fields 3.. of /proc/PID/stat; only ppid (4), flags (9) and starttime (22) matter here.
    rest = ["S", str(ppid), "1", "1", "0", "-1", str(flags)] + ["0"] * 12 + [str(start)]
    return f"{pid} ({comm}) " + " ".join(rest + ["1000", "5"] + ["0"] * 20) + "\n"


def make_proc(
    root: Path,
    pid: int,
    comm: str,
    ppid: int,
    *,
    score: int = 0,
    adj: int = 0,
    rss_pages: int = 10,
    cgroup: str = "0::/user.slice\n",
    cmdline: bytes = b"",
    flags: int = 0,
) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "stat").write_text(_stat(pid, comm, ppid, 1000 + pid, flags))
    (d / "statm").write_text(f"100 {rss_pages} 5 1 0 50 0\n")
    (d / "oom_score").write_text(f"{score}\n")
    (d / "oom_score_adj").write_text(f"{adj}\n")
    (d / "cgroup").write_text(cgroup)
    (d / "cmdline").write_bytes(cmdline)


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    make_proc(root, 1, "systemd", 0, score=0, cmdline=b"/sbin/init\0")
    make_proc(root, 2, "kthreadd", 0, flags=0x00200000)
    make_proc(root, 10, "sshd", 1, score=0, adj=-1000)
    make_proc(root, 11, "tmux: server (x)", 1, score=700, cmdline=b"tmux\0new\0-s\0a b\0")
    make_proc(
        root,
        12,
        "python",
        11,
        score=900,
        rss_pages=1000,
        cgroup="12:cpu,memory:/job/w1\n0::/ignored\n",
    )
    make_proc(root, 13, "bash", 11, score=650)
    make_proc(root, 14, "guard", 1, score=2000, adj=-1000)
    make_proc(root, 15, "small", 1, score=10)
    # A process that vanished between listdir and the reads: a directory, no files.
    (root / "99").mkdir()
    (root / "self").mkdir()
    (root / "uptime").write_text("123.45 100.0\n")
    return root


def test_parse_stat_splits_on_the_last_paren() -> None:
    comm, ppid, flags, start = parse_stat(_stat(7, "a) (b c", 3, 4242))
    assert (comm, ppid, flags, start) == ("a) (b c", 3, 0, 4242)


def test_parse_memcg_prefers_v1_memory_line() -> None:
    assert parse_memcg("4:memory:/a/b\n0::/\n") == "/a/b"
    assert parse_memcg("1:name=systemd:/x\n0::/user.slice/s\n") == "/user.slice/s"
    assert parse_memcg("garbage") is None


def test_tree_from_fake_proc(fake_proc: Path) -> None:
    procs = build_tree(fake_proc)
    assert sorted(procs) == [1, 10, 11, 12, 13, 14, 15]  # kthread and vanished pid left out
    tmux = procs[11]
    assert tmux.comm == "tmux: server (x)"
    assert tmux.cmdline == ("tmux", "new", "-s", "a b")
    assert tmux.children == (12, 13)
    assert tmux.ident == (11, 1011)
    assert procs[12].memcg == "/job/w1"
    assert procs[12].rss_bytes == 1000 * os.sysconf("SC_PAGE_SIZE")
    victims = sorted(p.pid for p in procs.values() if p.likely_victim)
    # One victim, the kernel's first choice: 14 has the highest score but adj -1000.
    assert victims == [12]
    order = [(depth, p.pid) for depth, p in walk_tree(procs)]
    assert order == [(0, 1), (1, 10), (1, 11), (2, 12), (2, 13), (1, 14), (1, 15)]
    assert procs[12].to_json()["likely_victim"] is True


def test_kernel_threads_on_request(fake_proc: Path) -> None:
    procs = build_tree(fake_proc, kernel_threads=True)
    assert procs[2].kernel_thread and not procs[2].likely_victim


def test_read_process_of_missing_pid(fake_proc: Path) -> None:
    assert read_process(4242, fake_proc) is None
    assert read_process(99, fake_proc) is None


def test_process_vanishing_while_tree_is_read(
    fake_proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = proctree.read_process

    def flaky(pid: int, proc_root: str | Path = "/proc") -> proctree.ProcInfo | None:
        if pid == 13:
            for name in ("stat", "statm", "oom_score", "oom_score_adj", "cgroup", "cmdline"):
                (Path(proc_root) / "13" / name).unlink()
        return real(pid, proc_root)

    monkeypatch.setattr(proctree, "read_process", flaky)
    procs = build_tree(fake_proc)
    assert 13 not in procs and procs[11].children == (12,)


def test_missing_proc_root(tmp_path: Path) -> None:
    assert build_tree(tmp_path / "nothing") == {}


def test_real_proc_contains_this_process() -> None:
    procs = build_tree("/proc")
    me = procs[os.getpid()]
    assert me.ppid == os.getppid()
    assert me.start_time > 0 and me.oom_score is not None
    assert me.rss_bytes is not None and me.rss_bytes > 0
    assert sum(p.likely_victim for p in procs.values()) == 1
    assert {p.pid for _, p in walk_tree(procs)} == set(procs)
