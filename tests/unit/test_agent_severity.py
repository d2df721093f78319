"""Severity: a system daemon killed is critical, a workload at its own limit a warning, a
workload killed by a global OOM an error; on the seeds' global OOM reports."""

from __future__ import annotations

from pathlib import Path

from oomguard.agent.attribution import Trigger, trigger_of, workload_of, workload_of_path
from oomguard.agent.severity import Severity, is_system_daemon, severity_of
from oomguard.kernlog import parse_text

REPORTS = Path(__file__).resolve().parent.parent / "fixtures" / "oom_reports"


def _severities(name: str) -> dict[str, Severity]:
    events = parse_text((REPORTS / f"{name}.log").read_text(errors="replace"))
    return {
        f"{e.victim_comm}:{e.victim_pid}": severity_of(e.victim_comm, workload_of(e), trigger_of(e))
        for e in events
        if e.victim_pid is not None
    }


def test_daemons_in_the_seed_cascade_are_critical() -> None:
    found = _severities("seed_cascade_cut_6.1")
    assert found["sshd:2172743"] is Severity.CRITICAL
    assert found["systemd-network:2581"] is Severity.CRITICAL  # comm cut to 15 characters
    assert found["sleep:4667"] is Severity.ERROR  # a process killed by the node's OOM


def test_journald_and_dbus_in_seed_reports_are_critical() -> None:
    journald = _severities("docker_1001_journald_parens_syslog_5.x")
    assert journald["(journald):16432"] is Severity.CRITICAL  # systemd's name before exec
    assert journald["python3:16295"] is Severity.ERROR
    assert _severities("rpi_5297_arm_global_then_invoker_6.1")["dbus-daemon:327"] is (
        Severity.CRITICAL
    )


def test_a_workload_at_its_own_limit_is_a_warning() -> None:
    found = _severities("seed_docker_memcg_6.1")
    assert set(found.values()) == {Severity.WARNING}
    found = _severities("seed_global_tail_6.1")
    assert set(found.values()) == {Severity.ERROR}


def test_a_daemon_by_its_unit_and_a_containers_sshd_is_not_the_nodes() -> None:
    unit = workload_of_path("/system.slice/containerd.service")
    assert is_system_daemon("whatever", unit)
    assert severity_of("whatever", unit, Trigger.CGROUP) is Severity.CRITICAL
    pod = workload_of_path("/kubepods/pod0330b2c1-a15b-4cdd-b5e5-72d4a90bee82/" + "a" * 64)
    assert not is_system_daemon("sshd", pod)
    assert severity_of("sshd", pod, Trigger.CGROUP) is Severity.WARNING
    assert severity_of("kubelet", workload_of_path(None), Trigger.GLOBAL) is Severity.CRITICAL
