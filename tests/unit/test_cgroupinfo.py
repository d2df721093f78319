"""The read-only cgroup inspector against fake trees."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.fake_cgroup import V1_FILES, V2_FILES, make_proc, v2_mountinfo, write_files
from oomguard.cgroups.info import inspect_cgroup

MiB = 1024**2


def _v2(tmp_path: Path) -> tuple[Path, Path]:
    proc = make_proc(
        tmp_path / "proc",
        321,
        "0::/pod/ctr\n",
        mountinfo=v2_mountinfo(),
        extra={"meminfo": "MemTotal: 1048576 kB\n"},
    )
    root = write_files(tmp_path / "cg", {"cgroup.controllers": "memory"})
    write_files(
        root / "pod",
        {
            **V2_FILES,
            "memory.max": str(1024 * MiB),
            "memory.current": str(900 * MiB),
            "memory.oom.group": "1",
        },
    )
    write_files(
        root / "pod/ctr",
        {
            **V2_FILES,
            "memory.max": str(512 * MiB),
            "memory.current": str(100 * MiB),
            "memory.events": "low 0\nhigh 3\nmax 7\noom 2\noom_kill 1\noom_group_kill 1\n",
            "memory.pressure": "some avg10=1.50 avg60=0.00 avg300=0.00 total=9\n"
            "full avg10=0.25 avg60=0.00 avg300=0.00 total=3\n",
        },
    )
    return proc, root


def test_v2_levels_and_the_limit_hit_first(tmp_path: Path) -> None:
    proc, root = _v2(tmp_path)
    info = inspect_cgroup(321, proc_root=proc, cgroup_root=root)
    assert [level.path for level in info.levels] == ["/pod/ctr", "/pod", "/"]
    ctr, pod, top = info.levels
    assert ctr.events == {
        "low": 0,
        "high": 3,
        "max": 7,
        "oom": 2,
        "oom_kill": 1,
        "oom_group_kill": 1,
    }
    assert ctr.pressure is not None and ctr.pressure["some"]["avg10"] == 1.5
    assert pod.oom_group is True and ctr.oom_group is False
    assert top.limit_bytes is None
    # The pod has less room left (124 MiB) than the container (412 MiB).
    assert info.hits_first is pod
    assert info.smallest_limit is ctr
    data = info.to_json()
    assert data["hits_first"] == "/pod" and data["machine_memory_bytes"] == 1024 * MiB
    assert data["levels"][0]["headroom_bytes"] == 412 * MiB  # type: ignore[index]


def test_by_cgroup_path_and_by_directory(tmp_path: Path) -> None:
    proc, root = _v2(tmp_path)
    assert inspect_cgroup("/pod", proc_root=proc, cgroup_root=root).levels[0].path == "/pod"
    info = inspect_cgroup(root / "pod" / "ctr", proc_root=proc, cgroup_root=root)
    assert info.levels[0].path == "/pod/ctr" and info.pid is None
    with pytest.raises(LookupError):
        inspect_cgroup("/nope", proc_root=proc, cgroup_root=root)
    with pytest.raises(LookupError, match="no process"):
        inspect_cgroup(999, proc_root=proc, cgroup_root=root)


def test_v1_has_no_pressure_and_says_so(tmp_path: Path) -> None:
    proc = make_proc(tmp_path / "proc", 5, "4:memory:/a\n0::/\n")  # no mountinfo: fallback
    root = tmp_path / "cg"
    write_files(root / "memory", V1_FILES)
    write_files(
        root / "memory/a",
        {
            **V1_FILES,
            "memory.limit_in_bytes": str(64 * MiB),
            "memory.memsw.limit_in_bytes": str(96 * MiB),
            "memory.usage_in_bytes": str(60 * MiB),
        },
    )
    info = inspect_cgroup("5", proc_root=proc, cgroup_root=root)
    assert info.version == 1
    a = info.levels[0]
    assert a.pressure is None and a.swap_limit_bytes == 32 * MiB
    assert a.events == {"under_oom": 0, "oom_kill": 0}
    assert info.hits_first is a
    assert any("no per-cgroup memory pressure" in n for n in info.notes)
