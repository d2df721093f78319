"""deploy/kubernetes: the manifests parse; the replicated server is 2+ ``serve --replica``
pods behind a PodDisruptionBudget, its database URL comes from a secret (never written in a
manifest), its probes ask /healthz, and every option or variable a manifest passes to
``oomguard serve`` is one it has (an option's variable, or a config key's ``OOMGUARD_*``)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from oomguard.cli.server import serve
from oomguard.config import RunnerConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _serve_names() -> tuple[set[str], set[str]]:
    """``serve``'s options, and the variables it reads: its options' and the config's."""
    options: set[str] = set()
    envvars = {"OOMGUARD_" + field.name.upper() for field in fields(RunnerConfig)}
    for param in serve.params:
        options.update(getattr(param, "opts", []))
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            envvars.add(envvar)
        elif envvar:
            envvars.update(envvar)
    return options, envvars


def _server_container(doc: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    assert container["args"][:2] == ["oomguard", "serve"]
    return container


def test_every_manifest_parses_and_passes_serve_only_what_it_has() -> None:
    options, envvars = _serve_names()
    servers = 0
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in _documents(path.name):
            if doc["kind"] not in ("Deployment", "StatefulSet"):
                continue
            containers = doc["spec"]["template"]["spec"]["containers"]
            if containers[0]["args"][:2] != ["oomguard", "serve"]:
                continue
            servers += 1
            container = _server_container(doc)
            for arg in container["args"][2:]:
                if arg.startswith("--"):
                    assert arg in options, f"{path.name}: serve has no {arg}"
            for env in container.get("env", []):
                if env["name"].startswith("OOMGUARD_"):
                    assert env["name"] in envvars, f"{path.name}: serve reads no {env['name']}"
    assert servers == 2


def test_the_replicated_server_has_no_single_point_of_failure() -> None:
    docs = _documents("oomguard-replicated.yaml")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (budget,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    (service,) = [d for d in docs if d["kind"] == "Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    assert deployment["spec"]["replicas"] >= 2
    assert budget["spec"]["minAvailable"] >= 1
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    for selector in (budget["spec"]["selector"]["matchLabels"], service["spec"]["selector"]):
        assert selector.items() <= labels.items()

    container = _server_container(deployment)
    assert "--replica" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    store = env["OOMGUARD_STORE"]
    assert "value" not in store
    assert store["valueFrom"]["secretKeyRef"]["key"] == "url"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    text = (DEPLOY / "oomguard-replicated.yaml").read_text()
    assert "postgresql://" not in "".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    )
