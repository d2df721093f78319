"""What the Dask executor asks of the cluster beyond submitting and gathering.

Each function but :func:`connect` takes the executor's ``distributed.Client``: registering
oomguard's plugins, checking the scheduler's settings, asking it whether a key ever
started and where a key is running, reading its event topics (the evidence of worker
deaths), and recycling a worker: cordoning it (:func:`cordon`), asking what of oomguard's
it still runs or holds (:func:`held_on`), restarting it through its nanny
(:func:`restart_worker`). Each question to the scheduler is answered within
:data:`SCHEDULER_CALL_S` or raises :class:`TimeoutError`. What runs on the scheduler is
:mod:`oomguard.executors.dask.remote.scheduler`; on the workers,
:mod:`~oomguard.executors.dask.remote.worker_plugin`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import distributed
from distributed import Client
from distributed.comm.core import connect as connect_comm

from oomguard.config import RunnerConfig
from oomguard.errors import ConfigError
from oomguard.executors.dask.remote import PLUGIN_NAME
from oomguard.executors.dask.remote import scheduler as on_scheduler
from oomguard.executors.dask.remote.answers import Evidence
from oomguard.executors.dask.remote.nanny_plugin import NannyEvidencePlugin
from oomguard.executors.dask.remote.worker_plugin import (
    WorkerEvidencePlugin,
    host_isolation,
    kill_on_host,
)

log = logging.getLogger("oomguard.executor.dask")

#: the longest oomguard waits for the Dask scheduler to answer one question
SCHEDULER_CALL_S = 30.0
#: the longest oomguard waits to reach a Dask worker at start (see :func:`gather_directly`)
REACH_S = 2.0


def _on_scheduler(
    client: Client, function: Callable[..., object], extra_s: float = 0.0, **kwargs: object
) -> Any:
    """``function(dask_scheduler=..., **kwargs)`` run on the Dask scheduler, its answer
    awaited at most :data:`SCHEDULER_CALL_S` (plus ``extra_s``)."""
    # callback_timeout is Client.sync's own deadline; the other keywords go to function.
    return client.run_on_scheduler(function, callback_timeout=SCHEDULER_CALL_S + extra_s, **kwargs)


def connect(config: RunnerConfig) -> Client:
    """A client of the scheduler at ``config.dask_address``; :class:`ConfigError` if down."""
    try:
        client: Client = distributed.Client(
            config.dask_address, timeout="10s", set_as_default=False
        )
        return client
    except (OSError, TimeoutError) as err:
        raise ConfigError(
            f"cannot connect to the Dask scheduler at {config.dask_address}: {err}"
        ) from err


@dataclass(frozen=True)
class DaskWorker:
    """What the executor uses of a Dask worker, as the scheduler describes it."""

    nthreads: int = 1
    memory_limit: int | None = None
    #: its ``MEMORY`` resource (None: it has none: attempts are placed without it)
    memory: int | None = None


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) and value else None


def workers(client: Client) -> dict[str, DaskWorker]:
    """The cluster's workers by address (``Client.scheduler_info``)."""
    info = client.scheduler_info(n_workers=-1)
    got: dict[str, DaskWorker] = {}
    for address, worker in dict(info.get("workers") or {}).items():
        if not isinstance(worker, Mapping):
            continue
        resources = worker.get("resources")
        memory = resources.get("MEMORY") if isinstance(resources, Mapping) else None
        got[str(address)] = DaskWorker(
            nthreads=_int(worker.get("nthreads")) or 1,
            memory_limit=_int(worker.get("memory_limit")),
            memory=None if memory is None else int(memory),
        )
    return got


def gather_directly(client: Client, addresses: Collection[str]) -> bool:
    """Gather results straight from the Dask workers, not through the scheduler, when this
    process can reach each of ``addresses`` (within :data:`REACH_S`): each result then
    crosses the network once, and out of band (``Outcome.__reduce_ex__``: the scheduler's
    own connections pickle with protocol 4, in band). A worker that cannot be reached later
    is gathered from through the scheduler (distributed's own fallback)."""

    async def reach() -> None:
        for address in addresses:
            comm = await connect_comm(address, timeout=REACH_S, **client.connection_args)
            comm.abort()

    try:
        client.sync(reach, callback_timeout=REACH_S * max(1, len(addresses)) + 1)
    except Exception as err:
        log.info("results are gathered through the Dask scheduler: %s", err)
        return False
    client.direct_to_workers = True
    return True


def register_plugins(client: Client, config: RunnerConfig) -> bool:
    """Register oomguard's worker and nanny plugins, the evidence of worker deaths, and the
    scheduler's :class:`~oomguard.executors.dask.remote.scheduler.StartGuard`: whether the
    guard runs there (else each Dask task asks the scheduler before it runs)."""
    guarded = register_start_guard(client)
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
    return guarded


def register_start_guard(client: Client) -> bool:
    """Run :class:`~oomguard.executors.dask.remote.scheduler.StartGuard` on the scheduler
    (once: a second Runner finds it there); False if the scheduler refused it."""
    try:
        client.register_plugin(on_scheduler.StartGuard(), name=on_scheduler.StartGuard.name)
    except Exception as err:  # oomguard not importable there, an old distributed
        log.warning(
            "the Dask scheduler would not run oomguard's start guard (%s): each Dask task "
            "asks the scheduler whether it ran before, one round trip each",
            err,
        )
        return False
    return True


def check_scheduler(client: Client) -> None:
    """Warn about scheduler settings that break oomguard's promises (allowed-failures)."""
    try:
        got = _on_scheduler(client, on_scheduler.settings)
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
    try:
        return bool(_on_scheduler(client, on_scheduler.was_started, key=key))
    except Exception:
        return True  # cannot tell: count it as the attempt that died


def processing_on(client: Client, key: str) -> str | None:
    """The address of the worker running the task ``key`` now, if the scheduler knows."""
    try:
        got = _on_scheduler(client, on_scheduler.processing_on, key=key)
    except Exception:
        return None
    return None if got is None else str(got)


def kill_on_worker(
    client: Client, address: str, attempt_id: int, reason: str, evidence: Evidence
) -> str:
    """Kill the child process running ``attempt_id`` on the worker at ``address``, the
    Dask worker itself untouched: ``killed``, ``absent`` (no child there runs it), or
    ``thread`` (that worker runs attempts in its own thread, or cannot be asked)."""
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


def describe_workers(client: Client) -> dict[str, dict[str, object]]:
    """How each Dask worker isolates attempts (mode, reason, pid, children), by address."""
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


def scheduler_events(client: Client, topic: str, since: float) -> list[Mapping[str, object]]:
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
    return bool(_on_scheduler(client, on_scheduler.cordon, address=address))


def uncordon(client: Client, address: str) -> bool:
    """Undo :func:`cordon`: the worker at ``address`` runs tasks again."""
    return bool(_on_scheduler(client, on_scheduler.uncordon, address=address))


def held_on(client: Client, address: str, prefix: str) -> tuple[list[str], list[str]] | None:
    """The Dask tasks whose keys start with ``prefix`` that the worker at ``address`` has.

    ``(busy, queued)``: *busy* ones started there and still run, or finished there and
    wait to be gathered (their results live in that worker's memory); *queued* ones are
    assigned to it and never started. None: the scheduler knows no such worker.
    """
    got = _on_scheduler(client, on_scheduler.held_on, address=address, prefix=prefix)
    return None if got is None else (list(got[0]), list(got[1]))


def restart_worker(client: Client, address: str, prefix: str, timeout: float) -> list[str]:
    """Restart the worker at ``address`` through its nanny (a worker without a nanny is
    closed), waiting at most ``timeout`` seconds for its process to end and not for the
    new one to join; the keys starting with ``prefix`` it had when it was told to go.
    """
    keys, got = _on_scheduler(
        client,
        on_scheduler.restart_worker,
        extra_s=timeout,
        address=address,
        prefix=prefix,
        timeout=timeout,
    )
    if got.get(address) != "OK":
        log.warning("restarting Dask worker %s: %s", address, got.get(address))
    return list(keys)
