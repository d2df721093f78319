"""One kill as the agent reports it (:class:`KillReport`): the kernel's event, the
workload it hit, the trigger, the severity, and whether the victim was the container's
init process.

Init or child: once the kernel has killed the victim it is gone from ``/proc``, so the
agent looks at the victim's cgroup right after the kill. A process still in it means the
victim was a child (the container lives on: the kill kubelet never reports as
OOMKilled); an empty or removed cgroup means the victim was the container's main
process (a container's pid namespace dies with its init, and the runtime then removes
its cgroup). A cgroup that cannot be read leaves it unknown.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from oomguard.agent.attribution import PodNames, Trigger, Workload, trigger_of, workload_of
from oomguard.agent.reader import SeenKill
from oomguard.agent.severity import Severity, severity_of
from oomguard.jobs.jsonvalue import JSON as JsonValue
from oomguard.kernlog import kmsg
from oomguard.kernlog.event import OomEvent

__all__ = ["JsonValue", "KillReport", "Role", "build_report", "role_of"]


class Role(str, Enum):
    INIT = "init"  # the container's (cgroup's) main process: nothing is left after it
    CHILD = "child"  # a process below it: the container runs on
    UNKNOWN = "unknown"


def _cgroup_dirs(cgroup_root: Path, path: str) -> list[Path]:
    rel = path.lstrip("/")
    return [cgroup_root / "memory" / rel, cgroup_root / rel]


def role_of(path: str | None, victim_pid: int | None, cgroup_root: Path) -> Role:
    """Whether ``victim_pid`` was the main process of the cgroup ``path`` (see module)."""
    if not path:
        return Role.UNKNOWN
    for directory in _cgroup_dirs(cgroup_root, path):
        procs_file = directory / "cgroup.procs"
        try:
            text = procs_file.read_text()
        except FileNotFoundError:
            continue
        except OSError:
            return Role.UNKNOWN
        pids = [int(p) for p in text.split() if p.isdigit() and int(p) != victim_pid]
        if not pids:
            return Role.INIT
        return Role.CHILD
    # The cgroup is gone: the container went with its process.
    return (
        Role.INIT
        if any(d.parent.exists() for d in _cgroup_dirs(cgroup_root, path))
        else Role.UNKNOWN
    )


@dataclass(frozen=True)
class KillReport:
    """Everything the agent says of one kill, in every channel."""

    event: OomEvent
    seq: int | None
    stamp: float | None
    workload: Workload
    trigger: Trigger
    severity: Severity
    role: Role
    node: str
    #: wall-clock time the agent read the kill (Unix seconds)
    seen_at: float

    @property
    def command(self) -> str:
        return self.event.victim_comm or "?"

    @property
    def trigger_cgroup(self) -> str | None:
        return self.event.oom_memcg if self.trigger is Trigger.CGROUP else None

    def summary(self) -> str:
        """One line for people (not yet escaped for Slack)."""
        what = "OOM kill (node out of memory)" if self.trigger is Trigger.GLOBAL else "OOM kill"
        limit = f" at the limit of {self.trigger_cgroup}" if self.trigger_cgroup else ""
        return (
            f"{self.severity.value}: {what} of {self.command} (pid {self.event.victim_pid}, "
            f"{self.role.value}) in {self.workload.label}{limit} on {self.node}"
        )

    def kernel_lines(self) -> tuple[str, ...]:
        """The kernel's lines of the report, as people read them."""
        return tuple(_kernel_text(line) for line in self.event.lines)

    def fields(self) -> dict[str, JsonValue]:
        """The report's JSON fields (the webhook body, the JSON log line)."""
        w = self.workload
        event = self.event
        return {
            "node": self.node,
            "severity": self.severity.value,
            "trigger": self.trigger.value,
            "trigger_cgroup": self.trigger_cgroup,
            "victim_pid": event.victim_pid,
            "command": event.victim_comm,
            "role": self.role.value,
            "group_kill": event.oom_group,
            "workload_kind": w.kind.value,
            "workload": w.label,
            "cgroup": w.cgroup,
            "pod_uid": w.pod_uid,
            "namespace": w.namespace,
            "pod": w.pod,
            "container": w.container,
            "container_id": w.container_id,
            "runtime": w.runtime,
            "qos": w.qos,
            "unit": w.unit,
            "slice": w.slice,
            "user": w.user,
            "rss_kb": event.rss_kb,
            "oom_score_adj": event.oom_score_adj,
            "boot_seconds": self.stamp,
            "kmsg_seq": self.seq,
            "kernel_lines": list(self.kernel_lines()),
        }


def _kernel_text(line: str) -> str:
    """A line as people read it: a raw kmsg record without its ``prio,seq,usec;`` header."""
    record = kmsg.parse_record(line)
    return line if record is None else f"[{record.stamp:12.6f}] {record.text}"


def build_report(
    seen: SeenKill,
    names: PodNames,
    *,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    node: str = "",
    now: float | None = None,
) -> KillReport:
    """Name the workload, the trigger, the severity and the role of one kill."""
    event = seen.event
    workload = workload_of(event, names)
    trigger = trigger_of(event)
    return KillReport(
        event=event,
        seq=seen.seq,
        stamp=seen.stamp,
        workload=workload,
        trigger=trigger,
        severity=severity_of(event.victim_comm, workload, trigger),
        role=role_of(event.task_memcg, event.victim_pid, cgroup_root),
        node=node or socket.gethostname(),
        seen_at=time.time() if now is None else now,
    )
