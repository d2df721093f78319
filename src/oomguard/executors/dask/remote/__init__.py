"""What Dask workers, their nannies and the Dask scheduler import: oomguard's side of a
Dask cluster, importing nothing of the client side (:mod:`oomguard.executors.dask`).

* :mod:`.tasks`: :func:`~.tasks.run_calls`, the function every group of attempts is
  submitted as (on a Dask worker);
* :mod:`.worker_plugin` and :mod:`.host_pool`: the worker plugin and the pool of children
  it starts, where each attempt runs in its own memory cgroup (in each Dask worker);
* :mod:`.nanny_plugin`: the nanny plugin that reports how a worker process died (in each
  nanny);
* :mod:`.scheduler`: what oomguard asks of the Dask scheduler, run there;
* :mod:`.held`, :mod:`.progress`, :mod:`.heap`: results held for aggregations, the
  worker's progress file, and the worker's heap.

The names below are shared by the client and both plugins.
"""

import logging

#: the name both plugins are registered under
PLUGIN_NAME = "oomguard-evidence"
#: scheduler event topic of the nanny plugin's death records
DEATH_TOPIC = "oomguard-worker-death"
#: scheduler event topic the nanny uses when it restarts a worker over its memory limit
NANNY_MEMORY_TOPIC = "worker-restart-memory"
#: scheduler event topic a Dask worker names each of oomguard's keys on as it starts it
STARTED_TOPIC = "oomguard-started"
#: the Dask worker handler another worker takes held results from (worker_plugin.py)
TAKE_HELD_OP = "oomguard_take_held"
#: what every Dask key of oomguard's starts with
KEY_PREFIX = "oomguard-"
#: a Dask worker that runs attempts in its own thread (no pool of children)
THREAD = "thread"
#: the Dask worker's log (distributed configures a handler for its own loggers)
log = logging.getLogger("distributed.oomguard")

__all__ = [
    "DEATH_TOPIC",
    "KEY_PREFIX",
    "NANNY_MEMORY_TOPIC",
    "PLUGIN_NAME",
    "STARTED_TOPIC",
    "TAKE_HELD_OP",
    "THREAD",
    "log",
]
