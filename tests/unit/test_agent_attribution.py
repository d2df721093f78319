"""The agent names a victim's workload from its memory cgroup path: Kubernetes pods and
containers for every cgroup driver and runtime, Docker, systemd units, sessions; on
fixture paths and on the real seed reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomguard.agent.attribution import (
    NoPodNames,
    PodName,
    Trigger,
    WorkloadKind,
    trigger_of,
    workload_of,
    workload_of_path,
)
from oomguard.kernlog import OomEvent, parse_text

REPORTS = Path(__file__).resolve().parent.parent / "fixtures" / "oom_reports"
UID = "0330b2c1-a15b-4cdd-b5e5-72d4a90bee82"
UND = UID.replace("-", "_")
CID = "b27201334a41cd0749d053b18378d7ea65617b8e26277197ea25c974da1a5a8a"


@pytest.mark.parametrize(
    ("path", "qos", "runtime"),
    [
        # cgroupfs driver (v1 and v2 paths are the same below the hierarchy's root)
        (f"/kubepods/burstable/pod{UID}/{CID}", "burstable", None),  # containerd, docker
        (f"/kubepods/besteffort/pod{UID}/{CID}", "besteffort", None),
        (f"/kubepods/pod{UID}/{CID}", "guaranteed", None),
        (f"/kubepods/burstable/pod{UID}/crio-{CID}", "burstable", "cri-o"),
        # systemd driver
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UND}.slice/"
            f"cri-containerd-{CID}.scope",
            "burstable",
            "containerd",
        ),
        (
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UND}.slice/"
            f"crio-{CID}.scope",
            "besteffort",
            "cri-o",
        ),
        (f"/kubepods.slice/kubepods-pod{UND}.slice/docker-{CID}.scope", "guaranteed", "docker"),
        # nested: kind / k3d nodes in a container, a node inside a bigger cgroup tree
        (
            f"/system.slice/docker-{'f' * 64}.scope/kubepods/besteffort/pod{UID}/{CID}",
            "besteffort",
            None,
        ),
        (f"/process_api/abc/kubepods/burstable/pod{UID}/{CID}", "burstable", None),
    ],
)
def test_pod_and_container_from_every_driver_and_runtime(
    path: str, qos: str, runtime: str | None
) -> None:
    w = workload_of_path(path)
    assert w.kind is WorkloadKind.POD
    assert w.pod_uid == UID
    assert w.container_id == CID
    assert w.qos == qos
    assert w.runtime == runtime
    assert w.pod is None and w.namespace is None  # no kubelet: named by UID


def test_a_kill_at_the_pod_level_names_the_pod_without_a_container() -> None:
    w = workload_of_path(
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UND}.slice"
    )
    assert (w.kind, w.pod_uid, w.container_id) == (WorkloadKind.POD, UID, None)


def test_names_from_the_kubelet_and_the_uid_without_it() -> None:
    class Names:
        def lookup(self, pod_uid: str) -> PodName | None:
            if pod_uid == UID:
                return PodName("batch", "worker-7f9", ((CID, "main"),))
            return None

    path = f"/kubepods/burstable/pod{UID}/{CID}"
    named = workload_of_path(path, Names())
    assert (named.namespace, named.pod, named.container) == ("batch", "worker-7f9", "main")
    assert named.label == "batch/worker-7f9/main"
    bare = workload_of_path(path, NoPodNames())
    assert bare.pod is None and bare.label == f"pod {UID}/{CID[:12]}"
    assert (bare.key, named.key) == (f"pod/{UID}/", f"pod/{UID}/main")


@pytest.mark.parametrize(
    ("path", "kind", "unit", "slice_", "user"),
    [
        ("/system.slice/sshd.service", WorkloadKind.UNIT, "sshd.service", "system.slice", None),
        (
            "/system.slice/kubelet.service",
            WorkloadKind.UNIT,
            "kubelet.service",
            "system.slice",
            None,
        ),
        (
            "/user.slice/user-1000.slice/session-2.scope",
            WorkloadKind.SESSION,
            "session-2.scope",
            "user-1000.slice",
            1000,
        ),
        (
            "/user.slice/user-21417.slice/user@21417.service",
            WorkloadKind.SESSION,
            "user@21417.service",
            "user-21417.slice",
            21417,
        ),
        ("/machine.slice", WorkloadKind.UNIT, None, "machine.slice", None),
        ("/nomad/ebb8fbe9-aef0-95e3-1429-7747f66b7a82", WorkloadKind.CGROUP, None, None, None),
    ],
)
def test_units_slices_sessions_and_plain_cgroups(
    path: str, kind: WorkloadKind, unit: str | None, slice_: str | None, user: int | None
) -> None:
    w = workload_of_path(path)
    assert (w.kind, w.unit, w.slice, w.user) == (kind, unit, slice_, user)
    assert w.cgroup == path


def test_docker_outside_kubernetes_cgroupfs_and_systemd() -> None:
    for path in (f"/docker/{CID}", f"/system.slice/docker-{CID}.scope"):
        w = workload_of_path(path)
        assert (w.kind, w.container_id, w.runtime) == (WorkloadKind.CONTAINER, CID, "docker")


def _events(name: str) -> list[OomEvent]:
    return parse_text((REPORTS / f"{name}.log").read_text(errors="replace"))


def test_the_seed_reports() -> None:
    (istio,) = [e for e in _events("istio_42734_task_in_v1_syslog_3.10") if e.task_memcg]
    w = workload_of(istio)
    assert (w.pod_uid, w.container_id, w.runtime, w.qos) == (UID, CID, "docker", "burstable")
    assert trigger_of(istio) is Trigger.CGROUP

    gpud = next(e for e in _events("gpud_70_summary_mems_range_syslog_5.x") if e.task_memcg)
    w = workload_of(gpud)
    assert w.pod_uid == "eded8c65-6e8e-4c6e-a889-3e427565c740"
    assert w.container_id == "ec9ee26695deb4cc72bc665efff1cf3a03fdfb12f1303e02fe9252985e084a95"
    assert w.runtime == "containerd"

    k3d = next(e for e in _events("k3d_1250_journal_systemd_noise_5.14") if e.task_memcg)
    w = workload_of(k3d)
    assert (w.pod_uid, w.qos) == ("d8dcbcc6-5695-4b90-823b-ac11f60809ec", "besteffort")
    assert trigger_of(k3d) is Trigger.GLOBAL

    cadvisor = _events("cadvisor_oomparser_two_memcg_nostamp_4.8")
    assert [workload_of(e).kind for e in cadvisor] == [WorkloadKind.CONTAINER] * 2

    docker = _events("seed_docker_memcg_6.1")[0]
    assert workload_of(docker).kind is WorkloadKind.CONTAINER
    assert trigger_of(docker) is Trigger.CGROUP

    session = _events("seed_global_tail_6.1")[0]
    w = workload_of(session)
    assert (w.kind, w.unit, w.user) == (WorkloadKind.SESSION, "session-1.scope", 0)
    assert trigger_of(session) is Trigger.GLOBAL

    host = next(e for e in _events("seed_cascade_cut_6.1") if e.task_memcg is None)
    assert workload_of(host).kind is WorkloadKind.HOST
