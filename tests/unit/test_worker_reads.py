"""The worker's reads around every attempt: files kept open and read with ``pread``
(``/proc/self/statm``, the cgroup's OOM kill counter) give what a fresh read gives,
follow the file as it changes, and fall back when a file cannot be opened."""

from __future__ import annotations

from pathlib import Path

from oomguard import procfs
from oomguard.worker import child


def test_rss_from_the_open_statm_is_the_rss_procfs_reads() -> None:
    fresh = procfs.rss_bytes()
    kept = child.rss_bytes()
    assert fresh is not None and kept > 0
    # The same process a moment apart: within a few MiB of each other.
    assert abs(kept - fresh) < 8 * 1024 * 1024
    block = bytearray(64 * 1024 * 1024)  # touched: resident
    try:
        assert child.rss_bytes() >= kept + 48 * 1024 * 1024
    finally:
        del block


def test_open_file_follows_changes_and_reports_what_it_cannot_open(tmp_path: Path) -> None:
    path = tmp_path / "memory.events"
    path.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    opened = child._OpenFile(str(path))
    assert opened.read() is not None and "oom_kill 0" in (opened.read() or "")
    path.write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")  # same file, new text
    assert "oom_kill 2" in (opened.read() or "")
    assert child._OpenFile(str(tmp_path / "missing")).read() is None


def test_cgroup_kill_counter_read_through_the_kept_file(tmp_path: Path) -> None:
    """v2: ``memory.events``; v1: ``memory.oom_control``; a counter the kernel does not
    give is None, not 0."""
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.events").write_text("oom 1\noom_kill 1\n")
    cg2 = child._Cgroup(str(v2), 2)
    assert cg2.oom_kills() == 1
    (v2 / "memory.events").write_text("oom 4\noom_kill 3\n")
    assert cg2.oom_kills() == 3
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    assert child._Cgroup(str(v1), 1).oom_kills() is None
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
    assert child._Cgroup(str(v1), 1).oom_kills() == 5
