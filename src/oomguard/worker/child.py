"""The worker process: runs one attempt at a time, reports each outcome to the pool.

Started by the pool as ``python -P -m oomguard.worker.child`` in ``/`` with the pipe fds
and its settings in argv (JSON); see :func:`oomguard.worker.pool.worker_command`. The
first thing it does is tie its life to the scheduler's (``PR_SET_PDEATHSIG``), raise its
own ``oom_score_adj`` and move itself into its cgroup, all before it runs any task; then
it moves to the caller's directory (``task_dir``), if any.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import pickle
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from oomguard import procfs
from oomguard.cgroups.v2 import parse_flat_keyed
from oomguard.worker.leftovers import Leftovers

PR_SET_PDEATHSIG = 1

_libc: ctypes.CDLL | bool | None = None


#: heap growth over one attempt of a batch that has the garbage collected before the next
GC_GROWTH = 1024 * 1024


def _load_libc() -> ctypes.CDLL | None:
    global _libc  # process-local cache in the worker, not shared state
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name, use_errno=True) if name else False
    return _libc if isinstance(_libc, ctypes.CDLL) else None


def _die_with_parent(parent_pid: int) -> None:
    libc = _load_libc()
    if libc:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl: then we were re-parented already.
    if os.getppid() != parent_pid:
        os._exit(0)


def malloc_trim() -> bool:
    libc = _load_libc()
    trim = getattr(libc, "malloc_trim", None) if libc else None
    if trim is None:
        return False
    trim(0)
    return True


class _OpenFile:
    """A ``/proc`` or cgroup file read around every attempt: opened once and read again
    with ``pread`` (one system call, no path to walk); None when it cannot be opened."""

    def __init__(self, path: str) -> None:
        self.fd: int | None
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.fd = None

    def read(self) -> str | None:
        if self.fd is None:
            return None
        try:
            return os.pread(self.fd, 4096, 0).decode("utf-8", "replace")
        except OSError:
            return None


_statm: _OpenFile | None = None


def rss_bytes() -> int:
    """This worker's resident memory (``/proc/self/statm``, kept open)."""
    global _statm  # process-local cache in the worker, not shared state
    if _statm is None:
        _statm = _OpenFile(f"/proc/{os.getpid()}/statm")
    text = _statm.read()
    if text is None:
        return procfs.rss_bytes() or 0
    try:
        return int(text.split()[1]) * procfs.page_size()
    except (IndexError, ValueError):
        return 0


class _Cgroup:
    """The worker's view of its own cgroup: peak per attempt and the OOM kill counter."""

    def __init__(self, path: str, version: int) -> None:
        from oomguard.cgroups.cgroup import MemoryCgroup

        self.cg = MemoryCgroup(__import__("pathlib").Path(path), version)
        self.can_reset = True
        #: the file with the ``oom_kill`` counter, read after every attempt
        self._kills = _OpenFile(
            os.path.join(path, "memory.events" if version == 2 else "memory.oom_control")
        )

    def start(self) -> int | None:
        self.can_reset = self.cg.reset_peak()
        return self.cg.counters().oom_kill

    def end(self) -> tuple[int | None, int | None]:
        c = self.cg.counters()
        return (c.peak_bytes if self.can_reset else None), c.oom_kill

    def oom_kills(self) -> int | None:
        text = self._kills.read()
        if text is None:
            return self.cg.oom_kills()
        return parse_flat_keyed(text).get("oom_kill")


def _run_one(
    item: dict[str, Any], task_dir: str | None = None
) -> tuple[bool, Any, str | None, str | None, str | None]:
    """Call the task: (ok, value, failure_class, message, traceback).

    On failure ``value`` is the failure's evidence (a command's exit status, signal and
    pid: :class:`~oomguard.jobs.command.CommandFailed`), else None."""
    from oomguard.jobs.command import CommandFailed
    from oomguard.jobs.task import load, unwrap

    try:
        fn = unwrap(load(item["fn"], task_dir))
        kind = item["form"]
        if kind == "json":
            kwargs = json.loads(item["params"]) if item["params"] else {}
            if item.get("replicate") is not None:
                kwargs["replicate"] = item["replicate"]
            value = fn(**kwargs)
        elif kind == "agg":
            params = json.loads(item["params"]) if item["params"] else {}
            results = [pickle.loads(v) for v in item["results"]]
            value = fn(params, results)
        else:
            args, kwargs = pickle.loads(item["payload"])
            value = fn(*args, **kwargs)
    except MemoryError:
        return False, None, "memory_error", "MemoryError", traceback.format_exc(limit=20)
    except BaseException as err:  # a task may raise anything, SystemExit included
        if isinstance(err, KeyboardInterrupt):
            raise
        if isinstance(err, CommandFailed):  # the program's own failure: no traceback
            return False, dict(err.data), "error", f"{type(err).__name__}: {err}", None
        tb = traceback.format_exc(limit=50)
        fc = "memory_error" if _looks_like_allocation_error(err) else "error"
        return False, None, fc, f"{type(err).__name__}: {err}", tb
    return True, value, None, None, None


def process_peak(maxrss_before: int, rss_before: int) -> int:
    """The attempt's peak where no cgroup says: the process high-water mark if the attempt
    raised it, else the larger of RSS before and after (a lower bound)."""
    maxrss = maxrss_bytes()
    return maxrss if maxrss > maxrss_before else max(rss_before, rss_bytes())


def pickle_result(
    ok: bool, value: object, fc: str | None, message: str | None
) -> tuple[bool, bytes | None, str | None, str | None]:
    """``(ok, payload, failure_class, message)``: a result that cannot be pickled is an error."""
    if not ok:
        return ok, None, fc, message
    try:
        return True, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), fc, message
    except Exception as err:
        return False, None, "error", f"the result cannot be pickled: {type(err).__name__}: {err}"


def _looks_like_allocation_error(err: BaseException) -> bool:
    # numpy raises numpy.core._exceptions._ArrayMemoryError (a MemoryError subclass, caught
    # above); other libraries raise their own: match on the names they use.
    name = type(err).__name__.lower()
    text = str(err).lower()
    return "outofmemory" in name or "out of memory" in text or "cannot allocate memory" in text


def main(argv: list[str]) -> None:
    cfg = json.loads(argv[0])
    _die_with_parent(cfg["parent_pid"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the scheduler, which stops us
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write(str(cfg["oom_score_adj"]))
    except OSError:
        pass  # reported by the pool's start-up check
    cgroup = None
    if cfg.get("cgroup"):
        with open(os.path.join(cfg["cgroup"], "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
        cgroup = _Cgroup(cfg["cgroup"], cfg["cgroup_version"])
    # What an attempt leaves running is killed after it (worker/leftovers.py).
    leftovers = Leftovers(cfg.get("cgroup"))
    conn_in = Connection(cfg["fd_in"], writable=False)
    conn_out = Connection(cfg["fd_out"], readable=False)
    # Import task machinery now so its memory is part of the baseline.
    import oomguard.jobs.task  # noqa: F401

    # Started in "/" (see worker.pool.worker_command); tasks run in the caller's directory.
    task_dir = cfg.get("task_dir") or None
    if task_dir:
        os.chdir(task_dir)

    gc.collect()
    malloc_trim()
    baseline = rss_bytes()
    growth_limit = cfg.get("recycle_growth_bytes")
    max_tasks = cfg.get("max_tasks") or 0
    done = 0
    conn_out.send_bytes(pickle.dumps(("ready", os.getpid(), baseline)))
    while True:
        try:
            batch = pickle.loads(conn_in.recv_bytes())
        except (EOFError, OSError):
            return
        if batch is None:
            return
        memory_error = False
        # Batches are only made of short tasks of one memory key: for those, the peak is
        # read once per batch (peak = the batch's peak) instead of around every task. The
        # OOM kill counter is read after every task all the same (one small file): a
        # process killed in our cgroup belongs to the task that started it, not to the
        # last task of the batch.
        per_item = len(batch) == 1
        oom_seen = cgroup.start() if cgroup and not per_item else None
        rss_before = batch_rss = rss_bytes()
        for index, item in enumerate(batch):
            oom_before = cgroup.start() if cgroup and per_item else oom_seen
            rss = rss_bytes()
            if index and rss > rss_before + GC_GROWTH:
                # Each attempt of a batch as clean as one alone: what the last one left in
                # reference cycles is collected before the next one starts.
                gc.collect()
                rss = rss_bytes()
            rss_before = rss
            maxrss_before = maxrss_bytes()
            t0 = time.time()
            ok, value, fc, message, tb = _run_one(item, task_dir)
            elapsed = time.time() - t0
            left = leftovers.sweep()
            peak = None
            oom_after = None
            if cgroup and (per_item or index == len(batch) - 1 or not ok):
                peak, oom_after = cgroup.end()
                if not per_item and not ok and index < len(batch) - 1:
                    cgroup.start()  # what failed here is not the peak of those behind it
            elif cgroup:
                oom_after = cgroup.oom_kills()
            if not per_item and oom_after is not None:
                oom_seen = oom_after
            if peak is None:
                peak = process_peak(maxrss_before, rss_before)
            ok, payload, fc, message = pickle_result(ok, value, fc, message)
            evidence: dict[str, Any] = {"elapsed_s": round(elapsed, 6)}
            if tb:
                evidence["traceback"] = tb
            if left:
                evidence["left_processes"] = left
            if not ok and isinstance(value, dict):
                evidence.update(value)  # a command's exit status, signal, pid
            if oom_before is not None and oom_after is not None and oom_after > oom_before:
                # A process the task started was OOM-killed in our cgroup while we survived.
                ok, fc = False, "oom_cgroup"
                message = message or "a process started by the task was OOM-killed"
                evidence["cgroup_oom_kill"] = [oom_before, oom_after]
                evidence["survivor"] = True
                evidence["cgroup"] = cfg["cgroup"]  # where the kernel's line is looked for
            done += 1
            recycle = None
            if fc == "memory_error":
                recycle = "memory_error"
                memory_error = True
            del value
            conn_out.send_bytes(
                pickle.dumps(
                    (
                        "outcome",
                        item["attempt_id"],
                        ok,
                        payload,
                        fc,
                        message,
                        evidence,
                        peak,
                        recycle,
                    )
                )
            )
        # Against fragmentation: give freed memory back, then decide whether to retire.
        # After a batch of short tasks only when the heap grew: a full collection costs
        # more than the batch's own work.
        rss = rss_bytes()
        if per_item or rss > batch_rss + GC_GROWTH:
            gc.collect()
            malloc_trim()
            rss = rss_bytes()
        reason = None
        if memory_error:
            reason = "memory_error"
        elif growth_limit and rss - baseline > growth_limit:
            reason = "rss_growth"
        elif max_tasks and done >= max_tasks:
            reason = "max_tasks"
        conn_out.send_bytes(pickle.dumps(("idle", rss, reason)))


def maxrss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    main(sys.argv[1:])
