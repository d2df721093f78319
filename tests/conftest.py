"""Shared fixtures: where memory cgroups can be made, and helpers to run the CLI."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
# Worker processes import test task functions (fixtures.tasks) too.
os.environ["PYTHONPATH"] = str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")

#: fixtures defined in their own modules (a throwaway PostgreSQL cluster)
pytest_plugins = ["fixtures.postgres"]

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


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT / "tests") + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run(
        [*OOMGUARD, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


#: the ``cli`` fixture: :func:`run_cli`
RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli() -> RunCli:
    return run_cli


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs two test processes (`-n 2 --dist loadgroup`, pytest-xdist): the
    system tests, which measure real kernel OOM kills and memory high-water marks, stay in
    one group and so run one after another on one process, beside the rest.

    ``tryfirst``: pytest-xdist reads the groups in its own hook of this name, so the
    markers must be added before it runs. Its hook names the group by suffixing the item's
    ``_nodeid``, which pytest 9 no longer reads; :func:`_group_suffix` does it again in a
    form pytest 9 reads, so the group holds on both."""
    for item in items:
        if item.get_closest_marker("system") is not None:
            item.add_marker(pytest.mark.xdist_group("system"))


class _GroupSuffix:
    """After pytest-xdist's own hook on a worker process: an item of an ``xdist_group``
    whose id still has no ``@group`` suffix gets it in the id pytest 9 reads (``_id``), so
    that ``--dist loadgroup`` sends the group to one process (pytest-xdist 3.8 sets only
    ``_nodeid``, which pytest 9 ignores)."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        if not getattr(config.option, "loadgroup", False):
            return
        for item in items:
            names = {
                str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                for mark in item.iter_markers("xdist_group")
            }
            if names and "@" not in item.nodeid:
                from _pytest.nodeid import NodeId

                item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(sorted(names))}")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_GroupSuffix(), "oomguard-xdist-group-suffix")


#: children that live as long as the test process by design (started once, on demand)
KEPT_FOR_THE_SESSION = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
#: the test process's children when the test function was called (after every fixture
#: was set up, a module-scoped one asked for with getfixturevalue included)
CHILDREN_AT_CALL = pytest.StashKey[set[tuple[int, float]]]()


def _children() -> dict[tuple[int, float], psutil.Process]:
    """The test process's live descendants, each named by (pid, start time): pids are
    reused."""
    found: dict[tuple[int, float], psutil.Process] = {}
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue  # exited: it holds nothing and hangs nothing
            found[(child.pid, child.create_time())] = child
        except psutil.Error:
            continue
    return found


def _kept(process: psutil.Process, before: set[tuple[int, float]]) -> bool:
    """Spared: multiprocessing's session helpers, and anything started by a process that
    was there before the test (a Dask nanny restarting its worker, a module-scoped
    server starting its own workers): their owner stops them."""
    try:
        command = " ".join(process.cmdline())
        if any(name in command for name in KEPT_FOR_THE_SESSION):
            return True
        return any((parent.pid, parent.create_time()) in before for parent in process.parents())
    except psutil.Error:
        return True


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    item.stash[CHILDREN_AT_CALL] = set(_children())


@pytest.fixture(autouse=True)
def reap_leftover_children(request: pytest.FixtureRequest) -> Iterator[None]:
    """Reap any child process a test leaves: terminate, wait, kill.

    A leak is reported (a warning in the log and a list at the end of the run), not
    failed: failing would not free the process, and a leaked worker, server or Dask
    process holding a port, a cgroup or a pipe must never hang the rest of the run.

    What the test function started is a leak when it outlives the test's fixtures (this
    autouse fixture is set up first, so torn down last among the function-scoped ones).
    Processes there when the function was called are left alone, and so is what they
    start: fixtures own them, module-scoped ones (a cluster, a server) outlive the test by
    design. A test whose setup failed is not looked at.
    """
    yield
    before = request.node.stash.get(CHILDREN_AT_CALL, None)
    if before is None:
        return
    left = [p for key, p in _children().items() if key not in before and not _kept(p, before)]
    if not left:
        return
    names = []
    for process in left:
        try:
            names.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
            process.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(left, timeout=5)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=5)
    for name in names:
        # In the teardown's report: it reaches the controlling process under pytest-xdist.
        request.node.user_properties.append(("reaped", name))
    logging.getLogger("tests.reaper").warning(
        "%s left %d process(es), reaped: %s", request.node.nodeid, len(names), names
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the processes tests left behind (reaped after each), so leaks get fixed."""
    leaks = sorted(
        {
            (report.nodeid, str(value))
            for reports in terminalreporter.stats.values()
            for report in reports
            if isinstance(report, pytest.TestReport) and report.when == "teardown"
            for key, value in report.user_properties
            if key == "reaped"
        }
    )
    if leaks:
        terminalreporter.section("child processes left by tests (reaped)")
        for nodeid, name in leaks:
            terminalreporter.write_line(f"{nodeid}: {name}")
