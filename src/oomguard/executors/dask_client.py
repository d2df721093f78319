"""What the Dask executor asks of the cluster beyond submitting and gathering.

Each function but :func:`connect` takes the executor's ``distributed.Client``: registering
oomguard's plugins, checking the scheduler's settings, asking it whether a key ever
started and where a key is running, reading its event topics (the evidence of worker
deaths), and recycling a worker: cordoning it (:func:`cordon`), asking what of oomguard's
it still runs or holds (:func:`held_on`), restarting it through its nanny
(:func:`restart_worker`). Each question to the scheduler is answered within
:data:`SCHEDULER_CALL_S` or raises :class:`TimeoutError`. ``distributed`` is an optional
extra: :func:`import_distributed` imports it when the executor is built and names the
extra to install when it is missing.
"""

from __future__ import annotations

import logging
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from oomguard.config import RunnerConfig
from oomguard.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client, Scheduler
    from distributed.core import Status

log = logging.getLogger("oomguard.executor.dask")

MISSING = "the dask executor needs dask[distributed]: pip install 'oomguard[dask]'"
#: the longest oomguard waits for the Dask scheduler to answer one question
SCHEDULER_CALL_S = 30.0


def _on_scheduler(client: Client, function: Any, extra_s: float = 0.0, **kwargs: Any) -> Any:
    """``function(dask_scheduler=..., **kwargs)`` run on the Dask scheduler, its answer
    awaited at most :data:`SCHEDULER_CALL_S` (plus ``extra_s``)."""
    # callback_timeout is Client.sync's own deadline; the other keywords go to function.
    return client.run_on_scheduler(  # type: ignore[no-untyped-call]
        function, callback_timeout=SCHEDULER_CALL_S + extra_s, **kwargs
    )


def import_distributed() -> ModuleType:
    """The ``distributed`` module, or :class:`ConfigError` naming the extra to install."""
    try:
        import distributed
    except ImportError as err:
        raise ConfigError(MISSING) from err
    return distributed


def connect(config: RunnerConfig) -> Client:
    """A client of the scheduler at ``config.dask_address``; :class:`ConfigError` if down."""
    distributed = import_distributed()
    try:
        client: Client = distributed.Client(
            config.dask_address, timeout="10s", set_as_default=False
        )
        return client
    except (OSError, TimeoutError) as err:
        raise ConfigError(
            f"cannot connect to the Dask scheduler at {config.dask_address}: {err}"
        ) from err


def register_plugins(client: Client, config: RunnerConfig) -> None:
    """Register oomguard's worker and nanny plugins, the evidence of worker deaths."""
    from oomguard.executors.dask_plugin import (
        PLUGIN_NAME,
        NannyEvidencePlugin,
        WorkerEvidencePlugin,
    )

    worker_plugin = WorkerEvidencePlugin(
        config.worker_oom_score_adj,
        isolation=config.dask_isolation,
        recycle_growth_fraction=config.recycle_growth_fraction,
        max_tasks=config.max_tasks_per_worker,
        kernel_log=config.kernel_log,
        kernel_log_wait=config.kernel_log_wait,
    )
    client.register_plugin(worker_plugin, name=PLUGIN_NAME)
    client.register_plugin(NannyEvidencePlugin(config.kernel_log), name=PLUGIN_NAME)


def check_scheduler(client: Client) -> None:
    """Warn about scheduler settings that break oomguard's promises (allowed-failures)."""

    def settings(dask_scheduler: Scheduler) -> dict[str, Any]:
        import dask

        return {
            "allowed_failures": dask_scheduler.allowed_failures,
            "worker_saturation": dask.config.get("distributed.scheduler.worker-saturation"),
        }

    try:
        got = _on_scheduler(client, settings)
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


def started_on_worker(client: Client | None, key: str) -> bool:
    """Whether the task ``key`` ever started on a worker (``True`` when it cannot tell)."""
    if client is None:
        return True
    from oomguard.executors.dask_plugin import was_started

    try:
        return bool(_on_scheduler(client, was_started, key=key))
    except Exception:
        return True  # cannot tell: count it as the attempt that died


def processing_on(client: Client, key: str) -> str | None:
    """The address of the worker running the task ``key`` now, if the scheduler knows."""

    def where(dask_scheduler: Scheduler, key: str) -> str | None:
        ts = dask_scheduler.tasks.get(key)
        ws = getattr(ts, "processing_on", None)
        return None if ws is None else str(ws.address)

    try:
        got = _on_scheduler(client, where, key=key)
    except Exception:
        return None
    return None if got is None else str(got)


def kill_on_worker(
    client: Client, address: str, attempt_id: int, reason: str, evidence: dict[str, Any]
) -> str:
    """Kill the child process running ``attempt_id`` on the worker at ``address``, the
    Dask worker itself untouched: ``killed``, ``absent`` (no child there runs it), or
    ``thread`` (that worker runs attempts in its own thread, or cannot be asked)."""
    from oomguard.executors.dask_plugin import kill_on_host

    try:
        got = client.run(
            kill_on_host,
            attempt_id=attempt_id,
            reason=reason,
            evidence=evidence,
            workers=[address],
            on_error="return",
        )
    except Exception as err:
        log.info("cannot ask Dask worker %s to kill attempt %s: %s", address, attempt_id, err)
        return "thread"
    answer = got.get(address)
    return answer if isinstance(answer, str) else "thread"


def describe_workers(client: Client) -> dict[str, dict[str, Any]]:
    """How each Dask worker isolates attempts (mode, reason, pid, children), by address."""
    from oomguard.executors.dask_plugin import host_isolation

    try:
        got = client.run(host_isolation, on_error="return")
    except Exception as err:
        log.info("cannot ask the Dask workers how they isolate attempts: %s", err)
        return {}
    return {
        str(address): answer if isinstance(answer, dict) else {"mode": "unknown"}
        for address, answer in got.items()
    }


def isolation_of_workers(client: Client) -> dict[str, str]:
    """Each Dask worker's isolation mode by address, each said in the log (a warning
    where attempts are not isolated)."""
    modes = {}
    for address, info in sorted(describe_workers(client).items()):
        modes[address] = str(info.get("mode"))
        level = logging.WARNING if modes[address] == "thread" else logging.INFO
        log.log(
            level,
            "Dask worker %s runs attempts in %s mode: %s",
            address,
            modes[address],
            info.get("reason"),
        )
    return modes


def scheduler_events(client: Client, topic: str, since: float) -> list[dict[str, Any]]:
    """The scheduler's events on ``topic`` from ``since`` on (none when it cannot say)."""
    try:
        got = client.get_events(topic)
    except Exception:
        return []
    return [msg for ts, msg in got if ts >= since and isinstance(msg, dict)]


def cordon(client: Client, address: str) -> bool:
    """Stop the Dask scheduler from giving the worker at ``address`` anything more to run.

    What ``Scheduler.retire_workers`` does first: the worker's status becomes
    ``closing_gracefully`` on the scheduler at once (it leaves the scheduler's running
    workers: no task is assigned to it, none is stolen by it) and then on the worker
    itself, which from then on starts none of the tasks queued there; those it is running
    go on. False: the scheduler knows no such worker (it is gone already).
    """

    def on_scheduler(dask_scheduler: Scheduler, address: str) -> bool:
        from distributed.core import Status

        return _set_status(dask_scheduler, address, Status.closing_gracefully, "cordon")

    return bool(_on_scheduler(client, on_scheduler, address=address))


def uncordon(client: Client, address: str) -> bool:
    """Undo :func:`cordon`: the worker at ``address`` runs tasks again."""

    def on_scheduler(dask_scheduler: Scheduler, address: str) -> bool:
        from distributed.core import Status

        return _set_status(dask_scheduler, address, Status.running, "uncordon")

    return bool(_on_scheduler(client, on_scheduler, address=address))


def _set_status(dask_scheduler: Scheduler, address: str, status: Status, why: str) -> bool:
    """On the Dask scheduler: set a worker's status there, then tell the worker."""
    ws = dask_scheduler.workers.get(address)
    if ws is None:
        return False
    stimulus_id = f"oomguard-{why}-{time.time()}"
    dask_scheduler.handle_worker_status_change(status, ws, stimulus_id)
    comm = dask_scheduler.stream_comms.get(address)
    if comm is not None:
        comm.send({"op": "worker-status-change", "status": status.name, "stimulus_id": stimulus_id})
    return True


def held_on(client: Client, address: str, prefix: str) -> tuple[list[str], list[str]] | None:
    """The Dask tasks whose keys start with ``prefix`` that the worker at ``address`` has.

    ``(busy, queued)``: *busy* ones started there and still run, or finished there and
    wait to be gathered (their results live in that worker's memory); *queued* ones are
    assigned to it and never started. None: the scheduler knows no such worker.
    """

    def on_scheduler(
        dask_scheduler: Scheduler, address: str, prefix: str
    ) -> tuple[list[str], list[str]] | None:
        from oomguard.executors.dask_plugin import was_started

        ws = dask_scheduler.workers.get(address)
        if ws is None:
            return None
        busy: list[str] = []
        queued: list[str] = []
        for ts in ws.processing:
            key = str(ts.key)
            if key.startswith(prefix):
                (busy if was_started(dask_scheduler, key) else queued).append(key)
        busy += [str(ts.key) for ts in ws.has_what if str(ts.key).startswith(prefix)]
        return busy, queued

    got = _on_scheduler(client, on_scheduler, address=address, prefix=prefix)
    return None if got is None else (list(got[0]), list(got[1]))


def restart_worker(client: Client, address: str, prefix: str, timeout: float) -> list[str]:
    """Restart the worker at ``address`` through its nanny (a worker without a nanny is
    closed), waiting at most ``timeout`` seconds for its process to end and not for the
    new one to join; the keys starting with ``prefix`` it had when it was told to go.
    """

    async def on_scheduler(
        dask_scheduler: Scheduler, address: str, prefix: str, timeout: float
    ) -> tuple[list[str], dict[str, Any]]:
        ws = dask_scheduler.workers.get(address)
        if ws is None:
            return [], {address: "gone already"}
        keys = [str(ts.key) for ts in (*ws.processing, *ws.has_what)]
        got = await dask_scheduler.restart_workers(
            [address],
            timeout=timeout,
            wait_for_workers=False,
            on_error="return",
            stimulus_id=f"oomguard-recycle-{time.time()}",
        )
        return [key for key in keys if key.startswith(prefix)], dict(got)

    keys, got = _on_scheduler(
        client, on_scheduler, extra_s=timeout, address=address, prefix=prefix, timeout=timeout
    )
    if got.get(address) != "OK":
        log.warning("restarting Dask worker %s: %s", address, got.get(address))
    return list(keys)
