"""deploy/agent: the alert rules pass promtool (check and their unit tests), the
manifests parse and keep the DaemonSet's minimum (hostPID, read-only root, capabilities
dropped but what the agent needs), and every option they pass is one ``oomguard agent``
has."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.programs import required_program
from oomguard.cli.agent import agent_command

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "agent"


def _promtool() -> str:
    return required_program("promtool", "apt-get install -y prometheus")


@pytest.mark.parametrize(
    "args", [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]]
)
def test_promtool_checks_and_tests_the_alert_rules(args: list[str]) -> None:
    done = subprocess.run(
        [_promtool(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=DEPLOY,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _options() -> set[str]:
    return {opt for param in agent_command.params for opt in getattr(param, "opts", [])}


def test_the_daemonset_has_what_the_agent_needs_and_no_more() -> None:
    (ds,) = [d for d in _documents() if d["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) <= {"SYSLOG", "DAC_OVERRIDE", "SYS_RESOURCE"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/dev/kmsg", "/sys/fs/cgroup", "/var/lib/oomguard-agent"} <= mounts
    assert container["args"][:2] == ["oomguard", "agent"]
    given = {arg.split("=")[0] for arg in container["args"][2:]}
    assert given <= _options(), given - _options()
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    kinds = {d["kind"] for d in _documents()}
    assert {"ServiceMonitor", "ClusterRole", "ConfigMap", "ServiceAccount"} <= kinds


def test_the_systemd_unit_passes_known_options() -> None:
    unit = (DEPLOY / "oomguard-agent.service").read_text()
    command = re.search(r"ExecStart=(.*?)\n(?!\s)", unit, re.S)
    assert command is not None
    words = command.group(1).replace("\\\n", " ").split()
    assert words[:2] == ["/usr/local/bin/oomguard", "agent"]
    assert {w.split("=")[0] for w in words[2:]} <= _options()


def test_the_configmaps_policy_is_a_valid_policy(tmp_path: Path) -> None:
    from oomguard.agent.policy import load_policy

    (cm,) = [d for d in _documents() if d["kind"] == "ConfigMap"]
    path = tmp_path / "policy.toml"
    path.write_text(cm["data"]["policy.toml"])
    policy = load_policy(path)
    assert policy.adj and policy.groups
