"""Who was killed: a workload named from the memory cgroup path the kernel printed.

The kernel's ``oom-kill:`` line (4.19+) names ``task_memcg`` (the victim's cgroup) and
``oom_memcg`` (the cgroup whose limit was hit; absent for a global OOM); older kernels
print ``Task in X killed as a result of limit of Y``. From the path alone:

- Kubernetes: the pod UID and container ID, for the cgroupfs driver
  (``/kubepods/burstable/pod<uid>/<id>``, CRI-O's ``crio-<id>``) and the systemd driver
  (``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/
  cri-containerd-<id>.scope``, ``crio-<id>.scope``, ``docker-<id>.scope``), cgroup v1 and
  v2 alike (the paths are the same), wherever the tree is nested (kind, k3d, a node in a
  container); the QoS class from the path;
- a Docker container outside Kubernetes (``/docker/<id>``, ``docker-<id>.scope``);
- a systemd unit and its slice; a user session (``user-UID.slice/session-N.scope``);
- else the plain cgroup path.

Names (namespace, pod, container) come from a :class:`PodNames` lookup: the kubelet's
``/pods`` where it is reachable (:mod:`oomguard.agent.kubelet`); without it a pod stays
its UID, never an error.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from oomguard.kernlog.event import OomEvent

__all__ = [
    "NoPodNames",
    "PodName",
    "PodNames",
    "Trigger",
    "Workload",
    "WorkloadKind",
    "trigger_of",
    "workload_of",
    "workload_of_path",
]


class WorkloadKind(str, Enum):
    POD = "pod"
    CONTAINER = "container"  # a container outside Kubernetes (Docker)
    UNIT = "unit"  # a systemd service or scope
    SESSION = "session"  # a user's login session
    CGROUP = "cgroup"  # any other cgroup
    HOST = "host"  # no cgroup known (global OOM on an old kernel)


class Trigger(str, Enum):
    """What ran out: a cgroup's limit, the whole machine, a cpuset or a mempolicy."""

    CGROUP = "cgroup"
    GLOBAL = "global"
    CPUSET = "cpuset"
    MEMPOLICY = "mempolicy"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PodName:
    """What the kubelet says of a pod: its namespace and name, and container names by ID."""

    namespace: str
    name: str
    containers: tuple[tuple[str, str], ...] = ()  # (container ID, container name)

    def container(self, container_id: str | None) -> str | None:
        if not container_id:
            return None
        return next((name for cid, name in self.containers if cid == container_id), None)


class PodNames(Protocol):
    """Names for a pod UID; None where they cannot be had (never raises)."""

    def lookup(self, pod_uid: str) -> PodName | None: ...


class NoPodNames:
    """No kubelet: pods are named by their UID."""

    def lookup(self, pod_uid: str) -> PodName | None:
        return None


@dataclass(frozen=True)
class Workload:
    """The victim's workload, as far as its cgroup path (and the kubelet) tell."""

    kind: WorkloadKind
    cgroup: str | None = None
    pod_uid: str | None = None
    container_id: str | None = None
    runtime: str | None = None  # containerd, cri-o, docker (where the path says)
    qos: str | None = None  # guaranteed, burstable, besteffort
    namespace: str | None = None
    pod: str | None = None  # the pod's name (None: the kubelet was not asked or not there)
    container: str | None = None  # the container's name
    unit: str | None = None  # a systemd unit (sshd.service, session-2.scope)
    slice: str | None = None
    user: int | None = None  # a session's uid

    @property
    def key(self) -> str:
        """One workload across its restarts (a crash-looping pod's new containers share
        it): what the rate limit, Sentry's issue and the metrics group by."""
        if self.pod_uid:
            return f"pod/{self.pod_uid}/{self.container or ''}"
        if self.kind is WorkloadKind.CONTAINER:
            return f"container/{self.container_id}"
        if self.kind is WorkloadKind.SESSION:
            return f"user/{self.user}"
        if self.unit:
            return f"unit/{self.unit}"
        return f"cgroup/{self.cgroup or ''}"

    @property
    def label(self) -> str:
        """A short name for people: ``ns/pod/container``, a unit, a cgroup."""
        if self.pod_uid:
            pod = f"{self.namespace}/{self.pod}" if self.pod else f"pod {self.pod_uid}"
            container = self.container or (self.container_id or "")[:12]
            return f"{pod}/{container}" if container else pod
        if self.kind is WorkloadKind.CONTAINER:
            return f"container {(self.container_id or '')[:12]}"
        if self.kind is WorkloadKind.SESSION:
            return f"{self.unit} of uid {self.user}"
        if self.unit:
            return self.unit
        return self.cgroup or "host"


_UID = r"[0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}"
# cgroupfs: .../kubepods[/burstable|/besteffort]/pod<uid>[/<container>]
_POD_CGROUPFS = re.compile(
    r"(?:^|/)kubepods(?:/(?P<qos>burstable|besteffort))?/pod(?P<uid>"
    + _UID
    + r")(?:/(?P<rest>[^/]+))?"
)
# systemd: .../kubepods-burstable-pod<uid_>.slice[/<container>.scope]
_POD_SYSTEMD = re.compile(
    r"(?:^|/)kubepods(?:-(?P<qos>burstable|besteffort))?-pod(?P<uid>" + _UID + r")\.slice"
    r"(?:/(?P<rest>[^/]+))?"
)
# A container's cgroup below its pod, or a Docker container: runtime prefix, 64-hex id.
_CONTAINER = re.compile(
    r"^(?:(?P<prefix>cri-containerd|crio|docker|containerd)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$"
)
_DOCKER = re.compile(
    r"(?:^|/)(?:docker/(?P<a>[0-9a-f]{64})|docker-(?P<b>[0-9a-f]{64})\.scope)(?:/|$)"
)
_SESSION = re.compile(
    r"(?:^|/)user-(?P<uid>\d+)\.slice/(?P<unit>(?:session-[^/]+|user@\d+\.service))"
)
_UNIT = re.compile(r"[^/]+\.(?:service|scope|socket|mount|swap)$")
_RUNTIMES = {
    "cri-containerd": "containerd",
    "containerd": "containerd",
    "crio": "cri-o",
    "docker": "docker",
}


def _pod(path: str) -> Workload | None:
    # The innermost pod wins: kind and k3d nest a node's kubepods below another container.
    matches = [*_POD_CGROUPFS.finditer(path), *_POD_SYSTEMD.finditer(path)]
    if not matches:
        return None
    found = max(matches, key=lambda m: m.start())
    uid = found.group("uid").replace("_", "-").lower()
    qos = found.group("qos") or "guaranteed"
    container_id = runtime = None
    rest = found.group("rest")
    if rest:
        c = _CONTAINER.match(rest)
        if c is not None:
            container_id = c.group("id")
            runtime = _RUNTIMES.get(c.group("prefix") or "")
    return Workload(
        WorkloadKind.POD, path, pod_uid=uid, container_id=container_id, runtime=runtime, qos=qos
    )


def workload_of(event: OomEvent, names: PodNames | None = None) -> Workload:
    """The victim's workload from ``event``'s memory cgroup (the task's, else the OOM's)."""
    return workload_of_path(event.task_memcg or event.oom_memcg, names)


def workload_of_path(path: str | None, names: PodNames | None = None) -> Workload:
    """The workload of the cgroup ``path`` (as the kernel prints it, from its root)."""
    if not path:
        return Workload(WorkloadKind.HOST)
    found = _pod(path)
    if found is not None:
        if names is not None and found.pod_uid:
            pod = names.lookup(found.pod_uid)
            if pod is not None:
                found = dataclasses.replace(
                    found,
                    namespace=pod.namespace,
                    pod=pod.name,
                    container=pod.container(found.container_id),
                )
        return found
    docker = _DOCKER.search(path)
    if docker is not None:
        return Workload(
            WorkloadKind.CONTAINER,
            path,
            container_id=docker.group("a") or docker.group("b"),
            runtime="docker",
        )
    session = _SESSION.search(path)
    parts = [p for p in path.split("/") if p]
    slices = [p for p in parts if p.endswith(".slice")]
    if session is not None:
        return Workload(
            WorkloadKind.SESSION,
            path,
            unit=session.group("unit"),
            slice=slices[-1] if slices else None,
            user=int(session.group("uid")),
        )
    units = [p for p in parts if _UNIT.match(p)]
    if units:
        return Workload(
            WorkloadKind.UNIT, path, unit=units[-1], slice=slices[-1] if slices else None
        )
    if parts and parts[-1].endswith(".slice"):
        return Workload(WorkloadKind.UNIT, path, slice=parts[-1])
    return Workload(WorkloadKind.CGROUP, path)


def trigger_of(event: OomEvent) -> Trigger:
    """What the kill was for: a cgroup's limit (``memcg``) or the machine (``global``)."""
    constraint = event.constraint or ""
    if constraint == "CONSTRAINT_CPUSET":
        return Trigger.CPUSET
    if constraint == "CONSTRAINT_MEMORY_POLICY":
        return Trigger.MEMPOLICY
    if event.oom_type == "memcg" or constraint == "CONSTRAINT_MEMCG":
        return Trigger.CGROUP
    if event.oom_type == "global" or constraint == "CONSTRAINT_NONE":
        return Trigger.GLOBAL
    return Trigger.UNKNOWN
