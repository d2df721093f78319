"""``oomguard run --executor dask --dask-local N``: a local Dask cluster set up for oomguard.

The options themselves are added to ``run`` by :mod:`oomguard.cli.main`; this module only
starts the cluster: N worker *processes* (one thread each), each with a memory limit and
the matching ``MEMORY`` resource in bytes, on a scheduler that never retries behind
oomguard's back (``allowed-failures`` 0) and does not over-assign tasks
(``worker-saturation`` 1.0).
"""

from __future__ import annotations

from collections.abc import Callable

from oomguard.errors import ConfigError
from oomguard.units import parse_size

MISSING = "the dask executor needs dask[distributed]: pip install 'oomguard[dask]'"

#: scheduler settings for every cluster oomguard starts
SCHEDULER_CONFIG = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.0,
}


def local_cluster(n_workers: int, memory_limit: int | str | None) -> tuple[str, Callable[[], None]]:
    """Start a ``LocalCluster(processes=True)``; return its address and a closer.

    ``memory_limit`` is per worker (bytes, or ``"2GiB"``: ``--worker-memory``); ``None``
    splits this machine's memory (or its cgroup limit) evenly between the workers, as
    Dask's ``"auto"`` does.
    """
    if n_workers < 1:
        raise ConfigError(f"--dask-local needs at least 1 worker, not {n_workers}")
    try:
        import dask
        from distributed import LocalCluster
        from distributed.system import MEMORY_LIMIT
    except ImportError as err:
        raise ConfigError(MISSING) from err
    if isinstance(memory_limit, str):
        memory_limit = parse_size(memory_limit)
    per_worker = memory_limit or int(MEMORY_LIMIT // n_workers)
    with dask.config.set(SCHEDULER_CONFIG):
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=per_worker,
            resources={"MEMORY": per_worker},
            dashboard_address=None,
            host="127.0.0.1",
        )
    address = str(cluster.scheduler_address)

    def close() -> None:
        cluster.close()

    return address, close


__all__ = ["SCHEDULER_CONFIG", "local_cluster"]
