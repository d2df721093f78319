"""The policy file and its reconciler on fake /proc and cgroup trees (the readers take a
root path): the first matching rule gives a process its oom_score_adj, each process is
settled once (again when its cgroup or command changes), --dry-run writes nothing,
memory.oom.group is set on cgroup v2 and said to be
unsupported on v1."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomguard.agent.policy import Change, Outcome, Reconciler, load_policy
from oomguard.errors import ConfigError

POLICY = """
[[oom_score_adj]]
qos = "besteffort"
value = 1000

[[oom_score_adj]]
cgroup = "/kubepods*"
value = 900

[[oom_score_adj]]
unit = "sshd.service"
value = -900

[[oom_group]]
cgroup = "/kubepods.slice/*/*.scope"
value = 0
"""
POD = "/kubepods/besteffort/pod0330b2c1-a15b-4cdd-b5e5-72d4a90bee82/" + "a" * 64


def _process(proc: Path, pid: int, comm: str, cgroup: str, adj: int = 0, flags: int = 0) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    # state, ppid, pgrp, session, tty_nr, tpgid, flags, ..., starttime (field 22)
    fields = ["S", "1", str(pid), "0", "0", "-1", str(flags)] + ["0"] * 12 + ["12345"]
    (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + " 0 0\n")
    (d / "cgroup").write_text(f"4:memory:{cgroup}\n0::/\n")
    (d / "oom_score_adj").write_text(f"{adj}\n")


def test_rules_in_order_once_per_process(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    policy = load_policy(policy_file)
    proc = tmp_path / "proc"
    _process(proc, 10, "worker", POD)
    _process(proc, 11, "nginx", "/kubepods/burstable/pod0330b2c1-a15b-4cdd-b5e5-72d4a90bee83/x")
    _process(proc, 12, "sshd", "/system.slice/sshd.service")
    _process(proc, 13, "bash", "/user.slice/user-0.slice/session-1.scope")
    _process(proc, 14, "kworker/0:1", "/", flags=0x00200000)
    seen: list[Change] = []
    reconciler = Reconciler(
        policy, proc_root=proc, cgroup_root=tmp_path / "none", report=seen.append
    )
    changes = [c for c in reconciler.reconcile() if c.setting == "oom_score_adj"]
    assert {(c.target.split()[1], c.new, c.outcome) for c in changes} == {
        ("10", "1000", Outcome.CHANGED),
        ("11", "900", Outcome.CHANGED),
        ("12", "-900", Outcome.CHANGED),
    }
    assert (proc / "10/oom_score_adj").read_text() == "1000"
    assert (proc / "13/oom_score_adj").read_text() == "0\n"
    assert [c for c in seen if c.setting == "oom_score_adj"] == changes
    assert not [c for c in reconciler.reconcile() if c.setting == "oom_score_adj"]
    # Set back by someone: left alone until the process changes cgroup or command.
    (proc / "10/oom_score_adj").write_text("0")
    assert not [c for c in reconciler.reconcile() if c.setting == "oom_score_adj"]
    (proc / "10/cgroup").write_text(f"4:memory:{POD}/inner\n")
    assert [
        c.target.split()[1] for c in reconciler.reconcile() if c.setting == "oom_score_adj"
    ] == ["10"]


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    proc = tmp_path / "proc"
    _process(proc, 10, "worker", POD)
    dry = Reconciler(
        load_policy(policy_file),
        dry_run=True,
        proc_root=proc,
        cgroup_root=tmp_path,
        report=lambda c: None,
    )
    (change,) = [c for c in dry.reconcile() if c.setting == "oom_score_adj"]
    assert change.outcome is Outcome.WOULD_CHANGE
    assert change.describe().startswith("policy: would set oom_score_adj of pid 10 (worker)")
    assert (proc / "10/oom_score_adj").read_text() == "0\n"
    # A write the kernel refuses: tests/system/test_agent_policy.py, on real processes.


def test_memory_oom_group_on_v2_and_unsupported_on_v1(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    root = tmp_path / "cg"
    scope = root / "kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope"
    scope.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (scope / "memory.oom.group").write_text("1\n")
    (root / "kubepods.slice/memory.oom.group").write_text("1\n")
    reconciler = Reconciler(
        load_policy(policy_file),
        proc_root=tmp_path / "noproc",
        cgroup_root=root,
        report=lambda c: None,
    )
    (tmp_path / "noproc").mkdir()
    (change,) = reconciler.reconcile()
    assert (change.target, change.old, change.new) == (
        "/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope",
        "1",
        "0",
    )
    assert (scope / "memory.oom.group").read_text() == "0"
    assert (root / "kubepods.slice/memory.oom.group").read_text() == "1\n"
    v1 = Reconciler(
        load_policy(policy_file),
        proc_root=tmp_path / "noproc",
        cgroup_root=tmp_path / "v1",
        report=lambda c: None,
    )
    (unsupported,) = v1.reconcile()
    assert unsupported.outcome is Outcome.UNSUPPORTED
    assert v1.reconcile() == []  # said once


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[oom_score_adj]]\nvalue = 2000\ncgroup = '*'\n", "-1000..1000"),
        ("[[oom_score_adj]]\nvalue = 100\n", "selects nothing"),
        ("[[oom_score_adj]]\nvalue = 100\npod = 'x'\n", "unknown key"),
        ("[[oom_group]]\ncgroup = '*'\nvalue = 2\n", "value 0 or 1"),
        ("[rules]\n", "unknown table"),
        ("not toml [", "is not TOML"),
    ],
)
def test_a_bad_policy_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_policy(path)
