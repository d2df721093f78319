"""What the Dask executor asks of the cluster beyond submitting and gathering.

Each function but :func:`connect` takes the executor's ``distributed.Client``: registering
oomguard's plugins, checking the scheduler's settings, asking it whether a key ever
started and where a key is running, reading its event topics (the evidence of worker
deaths), and restarting a worker off the caller's thread. ``distributed`` is an optional
extra: :func:`import_distributed` imports it when the executor is built and names the
extra to install when it is missing.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from oomguard.config import RunnerConfig
from oomguard.errors import ConfigError

log = logging.getLogger("oomguard.executor.dask")

MISSING = "the dask executor needs dask[distributed]: pip install 'oomguard[dask]'"


def import_distributed() -> Any:
    """The ``distributed`` module, or :class:`ConfigError` naming the extra to install."""
    try:
        import distributed
    except ImportError as err:
        raise ConfigError(MISSING) from err
    return distributed


def connect(config: RunnerConfig) -> Any:
    """A client of the scheduler at ``config.dask_address``; :class:`ConfigError` if down."""
    distributed = import_distributed()
    try:
        return distributed.Client(config.dask_address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise ConfigError(
            f"cannot connect to the Dask scheduler at {config.dask_address}: {err}"
        ) from err


def register_plugins(client: Any, config: RunnerConfig) -> None:
    """Register oomguard's worker and nanny plugins, the evidence of worker deaths."""
    from oomguard.executors.dask_plugin import (
        PLUGIN_NAME,
        NannyEvidencePlugin,
        WorkerEvidencePlugin,
    )

    client.register_plugin(WorkerEvidencePlugin(config.worker_oom_score_adj), name=PLUGIN_NAME)
    client.register_plugin(NannyEvidencePlugin(config.kernel_log), name=PLUGIN_NAME)


def check_scheduler(client: Any) -> None:
    """Warn about scheduler settings that break oomguard's promises (allowed-failures)."""

    def settings(dask_scheduler: Any) -> dict[str, Any]:
        import dask

        return {
            "allowed_failures": dask_scheduler.allowed_failures,
            "worker_saturation": dask.config.get("distributed.scheduler.worker-saturation"),
        }

    try:
        got = client.run_on_scheduler(settings)
    except Exception as err:  # a scheduler that refuses run_on_scheduler still works
        log.info("cannot read the Dask scheduler's settings: %s", err)
        return
    if got.get("allowed_failures"):
        log.warning(
            "the Dask scheduler has allowed-failures=%s: Dask reruns attempts whose "
            "worker died before oomguard sees the death; start it with "
            "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0",
            got["allowed_failures"],
        )
    if got.get("worker_saturation") not in (1, 1.0):
        log.info(
            "the Dask scheduler has worker-saturation=%s (oomguard's clusters use 1.0)",
            got.get("worker_saturation"),
        )


def started_on_worker(client: Any, key: str) -> bool:
    """Whether the task ``key`` ever started on a worker (``True`` when it cannot tell)."""
    from oomguard.executors.dask_plugin import was_started

    try:
        return bool(client.run_on_scheduler(was_started, key=key))
    except Exception:
        return True  # cannot tell: count it as the attempt that died


def processing_on(client: Any, key: str) -> str | None:
    """The address of the worker running the task ``key`` now, if the scheduler knows."""

    def where(dask_scheduler: Any, key: str) -> str | None:
        ts = dask_scheduler.tasks.get(key)
        ws = getattr(ts, "processing_on", None)
        return None if ws is None else str(ws.address)

    try:
        got = client.run_on_scheduler(where, key=key)
    except Exception:
        return None
    return None if got is None else str(got)


def scheduler_events(client: Any, topic: str, since: float) -> list[dict[str, Any]]:
    """The scheduler's events on ``topic`` from ``since`` on (none when it cannot say)."""
    try:
        got = client.get_events(topic)
    except Exception:
        return []
    return [msg for ts, msg in got if ts >= since and isinstance(msg, dict)]


def restart_in_background(client: Any, address: str) -> None:
    """Restart the worker at ``address`` through its nanny, on a thread of its own."""

    def restart() -> None:
        try:
            client.restart_workers([address], raise_for_error=False)
        except Exception as err:
            log.warning("cannot restart Dask worker %s: %s", address, err)

    # Off the scheduler thread: a restart takes seconds, the loop must keep going.
    threading.Thread(target=restart, name="oomguard-dask-restart", daemon=True).start()
