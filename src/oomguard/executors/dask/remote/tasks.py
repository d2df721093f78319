"""The task wrapper: what every group of attempts is submitted as, run on a Dask worker.

:func:`run_calls` runs the group in a child of the worker's
:class:`~oomguard.executors.dask.remote.host_pool.HostPool`, in its own memory cgroup under
the limit admission gave it (a death there is classified on this host and returned as the
attempt's outcome); in ``thread`` mode it runs each call item here with the local worker's
own ``_run_one`` (same classification of ``MemoryError`` and exceptions). Values come back
pickled (the scheduler stores bytes); then garbage is collected and ``malloc_trim(0)``
called so freed memory goes back to the OS, and the worker's resident memory after trimming
is reported, so the executor can recycle workers that keep growing.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping

from distributed import get_client, get_worker
from distributed.utils import sync

from oomguard import procfs
from oomguard.executors.dask.remote import STARTED_TOPIC, TAKE_HELD_OP, THREAD, log
from oomguard.executors.dask.remote.answers import Evidence, GroupAnswer, Outcome
from oomguard.executors.dask.remote.heap import trim
from oomguard.executors.dask.remote.held import HOLD_FRACTION, HeldResults, refers
from oomguard.executors.dask.remote.host_pool import ChildUnavailable
from oomguard.executors.dask.remote.scheduler import first_start
from oomguard.executors.dask.remote.worker_plugin import WorkerEvidencePlugin, plugin_of
from oomguard.worker.calls import CallItem, held_refs
from oomguard.worker.child import _run_one, maxrss_bytes, pickle_result, process_peak


def _already_started(noted: bool) -> bool:
    """Whether this Dask task's key ran before: Dask recomputes a finished key whose worker
    died before oomguard gathered it; its attempts must not run twice behind its back.

    ``noted`` (the scheduler runs :class:`~.scheduler.StartGuard`, and the group runs in a
    child): the key is only named to the scheduler as started, on the worker's stream,
    with no wait; a rerun never gets here (the guard swapped it for
    :func:`~.scheduler.refuse_rerun`). Otherwise one round trip to the Dask scheduler: in
    ``thread`` mode the group may kill this worker at once (a segfault, ``os._exit``),
    and the scheduler must know it started before it can die of it.
    """
    try:
        worker = get_worker()
    except ValueError:
        return False  # not on a Dask worker (called directly): nothing to guard
    key = str(worker.get_current_task())
    if noted:
        worker.log_event(STARTED_TOPIC, key)
        return False
    first: bool = get_client().run_on_scheduler(first_start, key=key)
    return not first


def _run_item(item: CallItem) -> Outcome:
    rss_before = procfs.rss_bytes() or 0
    maxrss_before = maxrss_bytes()
    t0 = time.time()
    # A Dask worker imports task modules from the directory it was started in (after
    # everything installed), as a local worker does from its caller's.
    ok, value, fc, message, tb = _run_one(item, os.getcwd())
    elapsed = time.time() - t0
    peak = process_peak(maxrss_before, rss_before)
    ok, payload, fc, message = pickle_result(ok, value, fc, message)
    del value
    evidence: Evidence = {"elapsed_s": round(elapsed, 6)}
    if tb:
        evidence["traceback"] = tb
    return Outcome(item.attempt_id, ok, payload, fc, message, evidence, peak)


#: how long a Dask worker waits for another to hand over the results it holds
TAKE_HELD_S = 10.0


def _bring_held(
    items: list[CallItem], held: HeldResults, peers: Mapping[int, str], here: str | None
) -> list[int]:
    """Take the results ``items`` refer to and another worker holds (``peers``: where
    each is) from that worker, straight (one transfer, as Dask moves a dependency), and
    hold them here for :meth:`~.held.HeldResults.resolve`; the ids that came. One that does
    not come (its worker dropped it, died, did not answer in :data:`TAKE_HELD_S`) leaves
    the group ``missing``, as before."""
    wanted: dict[str, list[int]] = {}
    for item in items:
        for attempt_id in held_refs(item):
            at = peers.get(attempt_id)
            if at is not None and at != here:
                wanted.setdefault(at, []).append(attempt_id)
    if not wanted:
        return []
    worker = get_worker()

    async def take(address: str, attempt_ids: list[int]) -> list[tuple[int, bytes]]:
        call = getattr(worker.rpc(address), TAKE_HELD_OP)
        got: list[tuple[int, bytes]] = await asyncio.wait_for(
            call(attempt_ids=attempt_ids), TAKE_HELD_S
        )
        return got

    brought: list[int] = []
    for address, attempt_ids in wanted.items():
        try:
            got = sync(worker.loop, take, address, attempt_ids)
        except Exception as err:  # gone, or not answering: the group comes back missing
            log.info("oomguard: no held results from %s: %s", address, err)
            continue
        for attempt_id, payload in got:
            held.put(attempt_id, bytes(payload))
            brought.append(attempt_id)
    return brought


def run_calls(
    items: list[CallItem],
    limit: int | None = None,
    guarded: bool = False,
    peers: Mapping[int, str] | None = None,
) -> GroupAnswer:
    """Run a group of call items one after another on this Dask worker.

    Where the worker plugin started a :class:`~.host_pool.HostPool`
    the group runs in one of its children, in its own memory cgroup under ``limit`` (the
    limit admission gave it; None: the worker's memory limit), and a death there comes
    back as the attempt's classified outcome. In ``thread`` mode the items run here.

    Each item keeps its own outcome; like the local pool's batches, garbage is collected
    and malloc trimmed once after the group, and the worker's RSS reported then. Before
    each item the worker notes its position (:func:`read_progress`), so when the worker
    dies mid-group the executor can tell the attempts that ran from those that never began.
    Results asked to be held are kept here for their aggregation (:mod:`.held`); those
    its aggregations refer to that other workers hold (``peers``: attempt id -> worker
    address) are taken from them first (:func:`_bring_held`). ``guarded``: the Dask
    scheduler runs :class:`~.scheduler.StartGuard` (see :func:`_already_started`).
    """
    address, baseline = _worker_identity()
    plugin = _plugin()
    isolated = plugin is not None and plugin.pool is not None and plugin.pool.isolated
    if _already_started(guarded and isolated):
        return GroupAnswer(address, os.getpid(), duplicate=True)
    held = plugin.held if plugin is not None else None
    fetched = _bring_held(items, held, peers, address) if held is not None and peers else []
    resolved = held.resolve(items) if held is not None else items
    if resolved is None or (held is None and any(map(refers, items))):
        # A result an aggregation refers to is no longer held here: nothing runs (and
        # what was brought for it goes: the executor reads the store next time).
        if held is not None:
            held.take(fetched)
        return GroupAnswer(address, os.getpid(), missing=True)
    items = resolved
    key, progress = _current_key(), plugin.progress if plugin is not None else None

    def note(index: int) -> None:
        if progress is not None and key is not None:
            progress.note(key, index)

    pool = plugin.pool if plugin is not None else None
    recycles_before = dict(pool.recycles) if pool is not None else {}
    outcomes: list[Outcome] = []
    if pool is not None and pool.isolated:
        # The child collects and trims after its group; this process ran no task.
        note(0)
        if held is not None:  # held results never use memory an attempt was given
            held.fit(pool.room(HOLD_FRACTION, limit or pool.memory_limit or 0))
        try:
            outcomes = pool.run(items, limit, note)
        except ChildUnavailable as err:
            # Nothing ran: this group runs here, in the worker's thread, as in thread mode.
            log.warning("oomguard: %s; running it in the Dask worker's thread", err)
            pool = None
    if pool is None or not pool.isolated:
        for index, item in enumerate(items):
            note(index)
            outcomes.append(_run_item(item))
        # Against fragmentation: give what the tasks freed back before the next group.
        trim()
    kept: list[int] = []
    if held is not None and pool is not None and pool.isolated:
        kept = held.keep(items, outcomes, pool.room(HOLD_FRACTION))
    recycled: dict[str, int] = {}
    if pool is not None:
        recycled = {
            reason: n - recycles_before.get(reason, 0)
            for reason, n in pool.recycles.items()
            if n > recycles_before.get(reason, 0)
        }
    return GroupAnswer(
        worker=address,
        pid=os.getpid(),
        outcomes=tuple(outcomes),
        rss_after=procfs.rss_bytes(),
        baseline=baseline,
        isolation=pool.mode if pool is not None else THREAD,
        recycled=recycled,
        held=tuple(kept),
        dropped=tuple(held.take_dropped()) if held is not None else (),
        fetched=len(fetched),
    )


def _plugin() -> WorkerEvidencePlugin | None:
    """This Dask worker's plugin (None: not on a Dask worker, or none registered)."""
    try:
        return plugin_of(get_worker())
    except ValueError:
        return None


def _current_key() -> str | None:
    try:
        return str(get_worker().get_current_task())
    except ValueError:
        return None


def _worker_identity() -> tuple[str | None, int | None]:
    try:
        worker = get_worker()
    except ValueError:
        return None, None
    plugin = plugin_of(worker)
    return str(worker.address), plugin.baseline if plugin is not None else None
