"""The worker process: runs one attempt at a time, reports each outcome to the pool.

Started by the pool as ``python -P -m oomguard.worker.child`` in ``/`` with the pipe fds
and its settings in argv (JSON); see :func:`oomguard.worker.pool.worker_command`. The
first thing it does is tie its life to the scheduler's (``PR_SET_PDEATHSIG``), raise its
own ``oom_score_adj`` and move itself into its cgroup, all before it runs any task; then
it moves to the caller's directory (``task_dir``), if any.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

from oomguard import procfs
from oomguard.cgroups.v2 import parse_flat_keyed
from oomguard.errors import IsolationError
from oomguard.jobs.model import FailureClass
from oomguard.worker.calls import AggregateCall, CallItem, HeldRef, JsonCall, PickledCall
from oomguard.worker.frames import write_frame
from oomguard.worker.hygiene import IDLE_TRIM_S, SLACK, Hygiene, keep_freed_memory, load_libc
from oomguard.worker.leftovers import Leftovers
from oomguard.worker.messages import Batch, Idle, Message, Outcome, Ready, Refused, encode_parts

PR_SET_PDEATHSIG = 1


#: heap growth over one attempt of a batch that has the garbage collected before the next
GC_GROWTH = 1024 * 1024


def _die_with_parent(parent_pid: int) -> None:
    libc = load_libc()
    if libc:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl: then we were re-parented already.
    if os.getppid() != parent_pid:
        os._exit(0)


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
    """The worker's view of its own cgroup: peak per attempt, the OOM kill counter, and
    its limit when it must come down (worker/hygiene.py)."""

    def __init__(self, path: str, version: int) -> None:
        from oomguard.cgroups.cgroup import MemoryCgroup
        from oomguard.cgroups.workers import CounterFiles

        self.cg = MemoryCgroup(__import__("pathlib").Path(path), version)
        #: the counter files, kept open: read around every batch, or every attempt of a
        #: batch of one (a snapshot by path cost about 110 us here, four preads about 5)
        self.files = CounterFiles(self.cg)
        self.can_reset = True
        #: the file with the ``oom_kill`` counter, read after every attempt
        self._kills = _OpenFile(
            os.path.join(path, "memory.events" if version == 2 else "memory.oom_control")
        )
        self._kills_text: str | None = None
        self._kills_value: int | None = None

    def start(self) -> tuple[int | None, int | None]:
        """Restart the peak; ``(oom_kill counter, usage now)``."""
        self.can_reset = self.files.reset_peak()
        c = self.files.counters()
        return c.oom_kill, c.usage_bytes

    def end(self) -> tuple[int | None, int | None]:
        c = self.files.counters()
        return (c.peak_bytes if self.can_reset else None), c.oom_kill

    def oom_kills(self) -> int | None:
        text = self._kills.read()
        if text is None:
            return self.cg.oom_kills()
        if text != self._kills_text:  # parsed again only when the file changed
            self._kills_text = text
            self._kills_value = parse_flat_keyed(text).get("oom_kill")
        return self._kills_value

    def lower(self, limit: int | None, hygiene: Hygiene) -> str | None:
        """Lower the limit to ``limit``, giving memory back first if the kernel refuses;
        the refusal's message if it still does."""
        try:
            self.cg.set_limit(limit)
            return None
        except IsolationError:
            hygiene.trim()
        try:
            self.cg.set_limit(limit)
        except IsolationError as err:
            return str(err)
        return None


def call(item: CallItem, fn: Callable[..., object]) -> object:
    """Call the task's function ``fn`` as ``item``'s form says (worker/calls.py)."""
    if isinstance(item, JsonCall):
        kwargs = json.loads(item.params) if item.params else {}
        if item.replicate is not None:
            kwargs["replicate"] = item.replicate
        return fn(**kwargs)
    if isinstance(item, AggregateCall):
        params = json.loads(item.params) if item.params else {}
        results = []
        for value in item.results:
            if isinstance(value, HeldRef):  # put in by the Dask worker holding it, else refused
                raise RuntimeError(f"the result of attempt {value.attempt_id} is not here")
            results.append(pickle.loads(value))
        return fn(params, results)
    if isinstance(item, PickledCall):
        args, kwargs = pickle.loads(item.payload)
        return fn(*args, **kwargs)
    raise TypeError(f"not a call item: {type(item).__name__}")


#: the most functions a worker keeps loaded (a reference per command line is not kept)
FUNCTIONS_KEPT = 256


def _load(
    ref: str, task_dir: str | None, functions: dict[str, Callable[..., object]] | None
) -> Callable[..., object]:
    from oomguard.jobs.command import is_command
    from oomguard.jobs.task import load, unwrap, worker_import

    with worker_import(ref):
        fn = unwrap(load(ref, task_dir))
    if functions is not None and len(functions) < FUNCTIONS_KEPT and not is_command(ref):
        functions[ref] = fn
    return fn


def _run_one(
    item: CallItem,
    task_dir: str | None = None,
    functions: dict[str, Callable[..., object]] | None = None,
) -> tuple[bool, object, FailureClass | None, str | None, str | None]:
    """Call the task: (ok, value, failure_class, message, traceback).

    ``functions``: the functions this worker loaded, by reference (its module is imported
    once anyway: looked up again, it costs more than a no-op task's call). On failure
    ``value`` is the failure's evidence (a command's exit status, signal and pid:
    :class:`~oomguard.jobs.command.CommandFailed`), else None."""
    try:
        fn = functions.get(item.fn) if functions is not None else None
        if fn is None:
            fn = _load(item.fn, task_dir, functions)
        value = call(item, fn)
    except MemoryError:
        tb = traceback.format_exc(limit=20)
        return False, None, FailureClass.MEMORY_ERROR, "MemoryError", tb
    except BaseException as err:  # a task may raise anything, SystemExit included
        if isinstance(err, KeyboardInterrupt):
            raise
        from oomguard.jobs.command import CommandFailed

        if isinstance(err, CommandFailed):  # the program's own failure: no traceback
            return False, dict(err.data), FailureClass.ERROR, f"{type(err).__name__}: {err}", None
        tb = traceback.format_exc(limit=50)
        memory = _looks_like_allocation_error(err)
        fc = FailureClass.MEMORY_ERROR if memory else FailureClass.ERROR
        return False, None, fc, f"{type(err).__name__}: {err}", tb
    return True, value, None, None, None


def process_peak(maxrss_before: int, rss_before: int) -> int:
    """The attempt's peak where no cgroup says: the process high-water mark if the attempt
    raised it, else the larger of RSS before and after (a lower bound)."""
    maxrss = maxrss_bytes()
    return maxrss if maxrss > maxrss_before else max(rss_before, rss_bytes())


def pickle_result(
    ok: bool, value: object, fc: FailureClass | None, message: str | None
) -> tuple[bool, bytes | None, FailureClass | None, str | None]:
    """``(ok, payload, failure_class, message)``: a result that cannot be pickled is an error."""
    if not ok:
        return ok, None, fc, message
    try:
        return True, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), fc, message
    except Exception as err:
        return (
            False,
            None,
            FailureClass.ERROR,
            f"the result cannot be pickled: {type(err).__name__}: {err}",
        )


def _looks_like_allocation_error(err: BaseException) -> bool:
    # numpy raises numpy.core._exceptions._ArrayMemoryError (a MemoryError subclass, caught
    # above); other libraries raise their own: match on the names they use.
    name = type(err).__name__.lower()
    text = str(err).lower()
    return "outofmemory" in name or "out of memory" in text or "cannot allocate memory" in text


def _next_batch(conn_in: Connection, hygiene: Hygiene) -> Batch | None:
    """The next batch (None: exit); an idle worker gives its memory back meanwhile."""
    try:
        if not conn_in.poll(IDLE_TRIM_S):
            hygiene.idle()
        batch: Batch | None = pickle.loads(conn_in.recv_bytes())
    except (EOFError, OSError):
        return None
    return batch


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

    hygiene = Hygiene(rss_bytes)
    keep_freed_memory()
    baseline = hygiene.trim()
    growth_limit = cfg.get("recycle_growth_bytes")
    max_tasks = cfg.get("max_tasks") or 0
    done = 0
    functions: dict[str, Callable[..., object]] = {}  # loaded once each (see _run_one)
    _send(conn_out, Ready(os.getpid(), baseline))
    while True:
        batch = _next_batch(conn_in, hygiene)
        if batch is None:
            return
        # Memory freed by earlier attempts stays for this one unless it needs it back.
        retained = hygiene.before(batch.limit, batch.clean)
        if cgroup is not None and batch.lower:
            refusal = cgroup.lower(batch.limit, hygiene)
            if refusal is not None:
                _send(conn_out, Refused(refusal))
                _send(conn_out, Idle(rss_bytes(), "limit_change"))
                continue
            retained = hygiene.retained()
        items = batch.items
        memory_error = False
        # Batches are only made of short tasks of one memory key: for those, the peak is
        # read once per batch (peak = the batch's peak) instead of around every task. The
        # OOM kill counter is read after every task all the same (one small file): a
        # process killed in our cgroup belongs to the task that started it, not to the
        # last task of the batch.
        per_item = len(items) == 1
        oom_seen, usage_start = cgroup.start() if cgroup and not per_item else (None, None)
        rss_before = batch_rss = rss_bytes()
        #: the last attempt's RSS as it ended, where its peak read it: this one's start
        rss_after: int | None = None
        for index, item in enumerate(items):
            if cgroup and per_item:
                oom_before, usage_start = cgroup.start()
            else:
                oom_before = oom_seen
            rss = rss_after if rss_after is not None else rss_bytes()
            rss_after = None
            if index and rss > rss_before + GC_GROWTH:
                # Each attempt of a batch as clean as one alone: what the last one left in
                # reference cycles is collected before the next one starts.
                gc.collect()
                rss = rss_bytes()
            if index:
                retained = 0  # the batch's later attempts share its first one's peak
            rss_before = rss
            maxrss_before = maxrss_bytes()
            t0 = time.time()
            ok, value, fc, message, tb = _run_one(item, task_dir, functions)
            elapsed = time.time() - t0
            left = leftovers.sweep()
            peak = None
            oom_after = None
            if cgroup and (per_item or index == len(items) - 1 or not ok):
                peak, oom_after = cgroup.end()
                if not per_item and not ok and index < len(items) - 1:
                    cgroup.start()  # what failed here is not the peak of those behind it
            elif cgroup:
                oom_after = cgroup.oom_kills()
            if not per_item and oom_after is not None:
                oom_seen = oom_after
            if peak is None:
                # process_peak, keeping the RSS it read for the next attempt's start
                peak = maxrss_bytes()
                if peak <= maxrss_before:
                    rss_after = rss_bytes()
                    peak = max(rss_before, rss_after)
                start = rss_before
            else:
                start = usage_start or 0
            ok, payload, fc, message = pickle_result(ok, value, fc, message)
            evidence: dict[str, object] = {"elapsed_s": round(elapsed, 6)}
            if retained > SLACK and peak <= start + SLACK:
                # It ran within memory an earlier attempt left: its peak is a bound only.
                evidence["peak_bound"] = True
                evidence["retained_bytes"] = retained
            if tb:
                evidence["traceback"] = tb
            if left:
                evidence["left_processes"] = left
            if not ok and isinstance(value, dict):
                evidence.update(value)  # a command's exit status, signal, pid
            if oom_before is not None and oom_after is not None and oom_after > oom_before:
                # A process the task started was OOM-killed in our cgroup while we survived.
                ok, fc = False, FailureClass.OOM_CGROUP
                message = message or "a process started by the task was OOM-killed"
                evidence["cgroup_oom_kill"] = [oom_before, oom_after]
                evidence["survivor"] = True
                evidence["cgroup"] = cfg["cgroup"]  # where the kernel's line is looked for
            done += 1
            recycle = None
            if fc is FailureClass.MEMORY_ERROR:
                recycle = "memory_error"
                memory_error = True
            del value
            outcome = Outcome(item.attempt_id, ok, payload, fc, message, evidence, peak, recycle)
            _send(conn_out, outcome)
        leftovers.reap()  # children that exited by themselves (the sweeps list none)
        rss = rss_bytes()
        if len(items) > 1 and rss > batch_rss + GC_GROWTH:
            # A batch of short tasks that grew the heap: collected before the next batch,
            # as each of its attempts was before the next (its cycles are garbage now).
            gc.collect()
            rss = rss_bytes()
        reason = None
        if memory_error:
            reason = "memory_error"
        elif growth_limit and rss - baseline > growth_limit:
            # Growth or garbage? What a collection gives back is not growth.
            rss = hygiene.trim()
            if rss - baseline > growth_limit:
                reason = "rss_growth"
        if reason is None and max_tasks and done >= max_tasks:
            reason = "max_tasks"
        _send(conn_out, Idle(rss, reason))


def _send(conn_out: Connection, message: Message) -> None:
    parts = encode_parts(message)
    if len(parts) == 1:
        conn_out.send_bytes(parts[0])
    else:  # a large result after its outcome, in the same frame (worker/messages.py)
        write_frame(conn_out.fileno(), parts)


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    main(sys.argv[1:])
