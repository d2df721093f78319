"""Shared fixtures: where memory cgroups can be made, and helpers to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
# Worker processes import test task functions (fixtures.tasks) too.
os.environ["PYTHONPATH"] = str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")

OOMGUARD = [sys.executable, "-m", "oomguard.cli.main"]


def cgroup_unavailable_reason() -> str | None:
    """Why worker memory cgroups cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create memory cgroups"
    try:
        from oomguard.cgroups.detect import detect_isolation

        plan = detect_isolation("auto")
    except Exception as err:  # pragma: no cover - depends on the machine
        return f"cgroup detection failed: {err}"
    if plan.mode == "watchdog":
        return f"no writable memory cgroup: {plan.reason}"
    return None


@pytest.fixture
def require_cgroup() -> None:
    """Skip (or fail, with OOMGUARD_REQUIRE_CGROUP=1) where cgroups cannot be made."""
    reason = cgroup_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("OOMGUARD_REQUIRE_CGROUP") == "1":
        pytest.fail(f"OOMGUARD_REQUIRE_CGROUP=1 but {reason}")
    pytest.skip(reason)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT / "tests") + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run(
        [*OOMGUARD, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def cli():
    return run_cli


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs two test processes (`-n 2 --dist loadgroup`, pytest-xdist): the
    system tests, which measure real kernel OOM kills and memory high-water marks, stay in
    one group and so run one after another on one process, beside the rest."""
    for item in items:
        if item.get_closest_marker("system") is not None:
            item.add_marker(pytest.mark.xdist_group("system"))
