"""How bad a kill is: a system daemon killed is critical, a workload at its own limit a
warning, a workload killed because the whole node ran out an error.

A daemon is told by its command (the kernel's ``comm``, cut to 15 characters:
``systemd-networkd`` shows as ``systemd-network``) or by its systemd unit. The list is
the daemons whose loss takes a node down or out of reach: the kubelet, the container
runtimes, sshd, networking, journald, and the agent itself.
"""

from __future__ import annotations

from enum import Enum

from oomguard.agent.attribution import Trigger, Workload, WorkloadKind

__all__ = ["DAEMON_COMMANDS", "DAEMON_UNITS", "Severity", "is_system_daemon", "severity_of"]

#: the kernel's TASK_COMM_LEN: a comm is at most 15 characters
COMM_LEN = 15

DAEMON_COMMANDS = frozenset(
    name[:COMM_LEN]
    for name in (
        "kubelet",
        "containerd",
        "containerd-shim",
        "containerd-shim-runc-v2",
        "dockerd",
        "docker-proxy",
        "crio",
        "conmon",
        "sshd",
        "systemd",
        "systemd-networkd",
        "systemd-resolved",
        "systemd-journald",
        "journald",
        "systemd-logind",
        "systemd-udevd",
        "NetworkManager",
        "wpa_supplicant",
        "dhclient",
        "dbus-daemon",
        "kube-proxy",
        "oomguard",
    )
)
DAEMON_UNITS = frozenset(
    {
        "kubelet.service",
        "containerd.service",
        "docker.service",
        "crio.service",
        "ssh.service",
        "sshd.service",
        "systemd-networkd.service",
        "systemd-resolved.service",
        "systemd-journald.service",
        "systemd-logind.service",
        "NetworkManager.service",
        "dbus.service",
        "oomguard-agent.service",
    }
)


class Severity(str, Enum):
    CRITICAL = "critical"  # a system daemon: the node may go NotReady or out of reach
    ERROR = "error"  # a workload killed because the node ran out of memory
    WARNING = "warning"  # a workload killed at its own (or its pod's) limit


def is_system_daemon(command: str | None, workload: Workload) -> bool:
    """Whether the victim is one of the node's daemons (by unit, else by command)."""
    if workload.kind is WorkloadKind.UNIT and workload.unit in DAEMON_UNITS:
        return True
    if workload.kind in (WorkloadKind.POD, WorkloadKind.CONTAINER):
        return False  # a container's "sshd" is not the node's
    if command is None:
        return False
    # "(journald)": systemd names a unit's process so between its fork and its exec.
    name = command.strip()
    if name.startswith("(") and name.endswith(")"):
        name = name[1:-1]
    return name[:COMM_LEN] in DAEMON_COMMANDS


def severity_of(command: str | None, workload: Workload, trigger: Trigger) -> Severity:
    """The severity of killing ``command`` of ``workload`` for ``trigger``."""
    if is_system_daemon(command, workload):
        return Severity.CRITICAL
    if trigger is Trigger.CGROUP:
        return Severity.WARNING
    return Severity.ERROR
