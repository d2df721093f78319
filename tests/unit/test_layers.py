"""The lowest layers import nothing above them (cli, api -> scheduler -> executors ->
worker -> diagnosis -> cgroups, kernlog -> procfs)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import oomguard

SRC = Path(oomguard.__file__).resolve().parent
UPPER = ("cli", "ui", "api", "scheduler", "executors", "worker", "results", "notify")
# What each low package may not import, besides every upper layer.
FORBIDDEN = {
    "procfs.py": ("cgroups", "kernlog", "diagnosis"),
    "cgroups": ("kernlog", "diagnosis"),
    "kernlog": ("cgroups", "diagnosis"),
    "diagnosis": (),
    # Notifications sit beside the scheduler, which uses them: they use nothing of it.
    "notify": ("cgroups", "kernlog", "diagnosis"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith("oomguard.")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_low_layers_import_nothing_above_them(package: str) -> None:
    files = [SRC / package] if package.endswith(".py") else sorted((SRC / package).glob("*.py"))
    assert files
    own = package.removesuffix(".py")
    names = (*UPPER, *FORBIDDEN[package])
    banned = tuple(f"oomguard.{name}" for name in names if name != own)
    wrong = {
        f"{path.name}: {name}"
        for path in files
        for name in _imports(path)
        if name in banned or name.startswith(tuple(b + "." for b in banned))
    }
    assert not wrong, sorted(wrong)


def test_the_oom_package_is_gone() -> None:
    assert not (SRC / "oom").exists()


#: every layer from the top down; a layer imports only layers below it (and the shared ones)
LAYERS = (
    ("cli",),
    ("agent",),
    ("ui",),
    ("api",),
    ("joblib",),  # the joblib backend: on an Executor
    ("executor",),  # oomguard.Executor: on a Runner
    ("runner",),
    ("scheduler",),
    ("notify",),
    ("executors",),
    ("worker",),
    ("diagnosis",),
    ("cgroups", "kernlog"),
    ("procfs",),
)
#: what every layer may use; these import none of LAYERS
SHARED = ("jobs", "store", "results", "config", "errors", "units", "private_files")


def _layer_of(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def test_every_layer_imports_only_layers_below_it() -> None:
    rank = {name: i for i, names in enumerate(LAYERS) for name in names}
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        layer = _layer_of(path)
        if layer in ("__init__", "__main__", "demo", "examples"):
            continue
        for name in _imports(path):
            target = name.split(".")[1]
            if target == layer or target not in rank:
                continue
            if layer in SHARED or (layer in rank and rank[target] <= rank[layer]):
                wrong.append(f"{path.relative_to(SRC)} imports {name}")
    assert not wrong, wrong


def test_every_module_is_in_a_known_layer() -> None:
    known = {n for names in LAYERS for n in names} | set(SHARED)
    known |= {"__init__", "__main__", "demo", "examples", "py"}
    layers = {_layer_of(p) for p in SRC.rglob("*.py")}
    assert layers <= known, sorted(layers - known)
