"""Each package's ``__all__`` is exactly what it exports, and every name in it exists (as
httpx checks its public API): a public name is never added or dropped by accident."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import oomguard


def _packages() -> list[str]:
    names = ["oomguard"]
    for info in pkgutil.walk_packages(oomguard.__path__, "oomguard."):
        if info.ispkg:
            names.append(info.name)
    return sorted(names)


def test_the_public_api() -> None:
    assert sorted(oomguard.__all__) == [
        "CallFailedError",
        "CallMemoryError",
        "Executor",
        "Failure",
        "FailureClass",
        "Job",
        "JobStatus",
        "OomguardError",
        "Runner",
        "RunnerConfig",
        "TaskState",
        "WorkerDiedError",
        "command",
        "task",
    ]


@pytest.mark.parametrize("name", _packages())
def test_all_names_exist_and_are_public(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        # A package without __all__ exports nothing: it only groups modules.
        public = [
            n
            for n, v in vars(module).items()
            if not n.startswith("_")
            and getattr(v, "__module__", name) != name
            and not isinstance(v, type(importlib))
        ]
        assert public == [], f"{name} has public names but no __all__: {public}"
        return
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    for item in exported:
        assert not item.startswith("_"), f"{name}.__all__ exports private {item}"
        assert getattr(module, item) is not None, f"{name}.__all__: {item} is missing"
    # Every public name the package holds (not its submodules) is exported on purpose.
    held = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and n != "annotations" and not isinstance(v, type(importlib))
    }
    assert held <= set(exported) | _LAZY.get(name, set()), sorted(held - set(exported))


#: names a package resolves lazily (module __getattr__) rather than holding
_LAZY: dict[str, set[str]] = {}
