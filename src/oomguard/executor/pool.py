"""The executor: :class:`Executor`, a ``concurrent.futures.Executor`` on a
:class:`~oomguard.runner.Runner`.

Every call is one task of one job (per executor) in the Runner's store, run by the
Runner's workers in their memory cgroups, so a call killed by the kernel is classified,
retried with more memory as any task is, and fails only its own future. A collector
thread stores the calls submitted in a burst in one transaction; a call's future is
settled as the scheduler tells of its end, right after the commit that records it (on
the scheduler's thread; a future with done callbacks, a failure, or an answer kept as a
blob, by the collector).
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import json
import os
import pickle
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields, replace
from typing import Any, TypeVar, cast

from oomguard.executor.call import (
    CALL_REF,
    CHUNK_REF,
    ChunkAnswer,
    Raised,
    Returned,
    call_digest,
    decode,
    encode_call,
    encode_chunk,
    pickled_initializer,
    qualified_name,
)
from oomguard.executor.exceptions import RemoteTraceback, failure_error
from oomguard.jobs.status import Failure
from oomguard.jobs.task import TaskOptions
from oomguard.scheduler.endings import TaskEnded
from oomguard.store.blobs import BLOB_THRESHOLD
from oomguard.store.factory import open_store
from oomguard.store.protocol import Store
from oomguard.store.records import NewTask

T = TypeVar("T")

#: how long the collector waits for the scheduler to tell it of ended calls before it asks
#: the store whether any ended untold (cancelled, lost)
FALLBACK_S = 0.25
#: how many rows of a large burst are stored first, in a transaction of their own
FIRST_ROWS = 8
#: most row templates kept (one per function and task reference)
TEMPLATES_MAX = 256
#: the fields of a call's row that are its own; the others are its function's (a template)
_OWN_FIELDS = frozenset({"grp", "params", "params_ref", "payload", "payload_ref"})


def _rebuilt(answer: Raised) -> BaseException:
    err: BaseException
    if answer.exception is not None:
        try:
            loaded = decode(answer.exception)
            err = loaded if isinstance(loaded, BaseException) else RuntimeError(answer.text)
        except Exception:
            err = RuntimeError(answer.text)
    else:
        err = RuntimeError(answer.text)
    err.__cause__ = RemoteTraceback(answer.traceback)
    return err


class Executor(concurrent.futures.Executor):
    """``with oomguard.Executor(max_workers=4, worker_memory="2GiB") as ex: ...``: a
    ``ProcessPoolExecutor`` whose workers run in memory cgroups; a worker's death fails
    only its own future (:class:`~oomguard.executor.exceptions.WorkerDiedError`), a call
    OOM-killed at its limit runs again with more memory, and only a call that cannot fit
    fails (:class:`~oomguard.executor.exceptions.CallMemoryError`, a ``MemoryError``)."""

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[object, ...] = (),
        max_tasks_per_child: int | None = None,
        worker_memory: str | int | None = None,
        memory_budget: str | int | None = None,
        retries: int = 0,
        store: str | os.PathLike[str] | None = None,
        task_memory: str | int | None = None,
    ) -> None:
        from oomguard.runner import Runner

        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._tmp: str | None = None
        if store is None:
            self._tmp = tempfile.mkdtemp(prefix="oomguard-executor-")
            path = os.path.join(self._tmp, "executor.sqlite")
        else:
            path = os.fspath(store)
        self._initializer = (
            None if initializer is None else pickled_initializer(initializer, tuple(initargs))
        )
        options: dict[str, object] = {"retries": retries}
        if worker_memory is not None:
            options["worker_memory"] = worker_memory
        if task_memory is not None:
            options["task_memory"] = task_memory
        if max_tasks_per_child is not None:
            options["max_tasks_per_worker"] = max_tasks_per_child
        workers = max_workers or os.cpu_count() or 1
        self._runner = Runner(path, workers, memory_budget, None, config=None, **options)
        self._store = self._runner.store
        #: calls are kept to be found again by a later run (their digests stored)
        self._durable = store is not None
        #: answers of calls finished by an earlier executor on this store, by call digest
        self._finished = _finished_calls(self._store) if self._durable else {}
        self._job = "ex-" + uuid.uuid4().hex[:12]
        self._store.create_job(self._job, name="executor", fn=CALL_REF, agg=None)
        self._lock = threading.Lock()
        self._futures: dict[int, concurrent.futures.Future[object]] = {}
        self._order = itertools.count()
        self._groups = 0
        self._shutdown = False
        self._stop = threading.Event()
        #: rows submitted, not yet stored (the collector stores them, a burst at a time)
        self._unstored: list[NewTask] = []
        self._templates: dict[tuple[str, str], dict[str, object]] = {}
        #: what the collector is woken by: tasks that ended (told by the scheduler once
        #: its store holds them), or None (rows to store, or the end)
        self._inbox: queue.SimpleQueue[Sequence[TaskEnded] | None] = queue.SimpleQueue()
        #: calls whose endings the scheduler told (read by the collector: those the store
        #: holds beyond these ended another way)
        self._told = 0
        self._runner.endings.watch(self._job, self._on_ended)
        self._runner.start()
        self._collector = threading.Thread(
            target=self._collect, name="oomguard-executor", daemon=True
        )
        self._collector.start()

    # -- submitting -------------------------------------------------------------------

    def submit(
        self, fn: Callable[..., T], /, *args: object, **kwargs: object
    ) -> concurrent.futures.Future[T]:
        """Schedule ``fn(*args, **kwargs)``; its future."""
        blob = encode_call(fn, args, kwargs, self._initializer)
        # The future holds what fn returns: T, as the caller's type checker reads it.
        return cast("concurrent.futures.Future[T]", self._add(CALL_REF, fn, blob))

    def _add(
        self, ref: str, fn: Callable[..., object], blob: bytes
    ) -> concurrent.futures.Future[object]:
        payload = pickle.dumps(((blob,), {}), protocol=pickle.HIGHEST_PROTOCOL)
        common = self._template(ref, qualified_name(fn))
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            order = next(self._order)
            params = None
            if self._durable:
                # Kept as the task's parameters, so a later run finds the call's answer.
                digest = call_digest(blob, order)
                if (done := self._finished.pop(digest, None)) is not None:
                    # Finished by an earlier run of this script: its answer, not a new run.
                    future: concurrent.futures.Future[object] = concurrent.futures.Future()
                    future.set_running_or_notify_cancel()
                    try:
                        self._settle(future, decode(done))
                    except Exception as err:  # an answer that cannot be loaded here
                        future.set_exception(err)
                    return future
                params = f'{{"call": "{digest}"}}'  # json.dumps({"call": digest}), inline
            grp = self._groups
            big = len(payload) > BLOB_THRESHOLD
            row = NewTask(
                grp=grp,
                params=params,
                params_ref=None,
                payload=None if big else payload,
                payload_ref=self._store.blobs.put(payload) if big else None,
                **cast("dict[str, Any]", common),  # NewTask's own fields, from a row
            )
            future = concurrent.futures.Future()
            self._futures[grp] = future
            self._groups = grp + 1
            # Stored by the collector with the others of this burst: one transaction.
            self._unstored.append(row)
            first = len(self._unstored) == 1
        if first:
            self._inbox.put(None)
        return future

    def _template(self, ref: str, key: str) -> dict[str, object]:
        """The fields of the row of every call of ``ref`` with memory key ``key``, but
        those of its own (:data:`_OWN_FIELDS`), built once: a row is then one ``NewTask``
        call (``dataclasses.replace`` of a whole row cost about as much as the rest of a
        submission)."""
        template = self._templates.get((ref, key))
        if template is None:
            common = replace(self._runner.rows.fields(ref, {}, TaskOptions()), memory_key=key)
            (row,) = self._runner.rows.group(self._job, 0, common, None)
            template = {
                f.name: getattr(row, f.name) for f in fields(row) if f.name not in _OWN_FIELDS
            }
            if len(self._templates) >= TEMPLATES_MAX:
                self._templates.clear()
            self._templates[(ref, key)] = template
        return template

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[object],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """``fn`` over the iterables, in order; ``chunksize`` calls per task; at most
        ``buffersize`` tasks submitted ahead of the results taken; ``timeout`` counted
        from this call."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        deadline = None if timeout is None else time.monotonic() + timeout
        # Over one iterable, a chunk is its values, not a tuple of arguments a call.
        star = len(iterables) != 1
        calls: Iterator[object] = zip(*iterables, strict=False) if star else iter(iterables[0])
        chunks = iter(lambda: list(itertools.islice(calls, chunksize)), [])

        def submit_chunk(chunk: list[object]) -> concurrent.futures.Future[object]:
            return self._add(CHUNK_REF, fn, encode_chunk(fn, chunk, self._initializer, star))

        ahead = itertools.islice(chunks, buffersize) if buffersize is not None else chunks
        futures = collections.deque(submit_chunk(c) for c in ahead)
        return self._results(futures, chunks, submit_chunk, deadline)

    def _results(
        self,
        futures: collections.deque[concurrent.futures.Future[object]],
        more: Iterator[list[object]],
        submit_chunk: Callable[[list[object]], concurrent.futures.Future[object]],
        deadline: float | None,
    ) -> Iterator[T]:
        try:
            while futures:
                future = futures.popleft()
                if (chunk := next(more, None)) is not None:
                    futures.append(submit_chunk(chunk))
                left = None if deadline is None else deadline - time.monotonic()
                answer = future.result(left)
                if isinstance(answer, ChunkAnswer):
                    yield from answer.values  # type: ignore[misc]
                    if answer.raised is not None:
                        raise _rebuilt(answer.raised)
                    continue
                # A chunk stored by an earlier version: an answer per call.
                assert isinstance(answer, list)
                for each in answer:
                    if isinstance(each, Raised):
                        raise _rebuilt(each)
                    assert isinstance(each, Returned)
                    yield each.value  # type: ignore[misc]
        finally:
            for future in futures:
                future.cancel()

    # -- ending -----------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; with ``cancel_futures`` the calls not started are
        cancelled; with ``wait``, returns when every call ended and the workers stopped."""
        with self._lock:
            self._shutdown = True
            futures = list(self._futures.values())
        if cancel_futures:
            for future in futures:
                if not future.running():
                    future.cancel()
        if wait:
            concurrent.futures.wait(futures)
            self._close()
        else:
            threading.Thread(
                target=self._close_after, args=(futures,), name="oomguard-executor-close"
            ).start()

    def _close_after(self, futures: list[concurrent.futures.Future[object]]) -> None:
        concurrent.futures.wait(futures)
        self._close()

    def terminate_workers(self) -> None:
        """Stop the workers now: the calls not ended fail or are cancelled; no more
        submissions (as ``ProcessPoolExecutor.terminate_workers``)."""
        self._end_now()

    def kill_workers(self) -> None:
        """Kill the workers now (as ``ProcessPoolExecutor.kill_workers``)."""
        self._end_now()

    def _end_now(self) -> None:
        with self._lock:
            self._shutdown = True
            futures = list(self._futures.values())
        for future in futures:
            future.cancel()
        self._close()
        for future in futures:
            if not future.done():
                future.set_exception(RuntimeError("the executor's workers were stopped"))

    def _close(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
        self._inbox.put(None)
        if threading.current_thread() is not self._collector:
            self._collector.join()
        self._runner.endings.unwatch(self._job)
        self._runner.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # -- collecting -------------------------------------------------------------------

    def _on_ended(self, ended: Sequence[TaskEnded]) -> None:
        """What the scheduler tells, on its thread, right after the commit that records
        ``ended``: a call's answer held in its ending settles its future here (not through
        the collector: a thread hop fewer), unless the future has done callbacks, which
        must not hold up the scheduler (joblib's pickles and submits its next batch from
        one); those, failures and answers kept as blobs go to the collector."""
        rest = []
        for task in ended:
            if task.failure_class is None and task.value is not None and not self._called(task):
                self._finish_answer(task.group, task.value)
            else:
                rest.append(task)
        self._told += len(ended)  # only here: one thread counts
        if rest:
            self._inbox.put(rest)

    def _called(self, task: TaskEnded) -> bool:
        """Whether ``task``'s future has done callbacks (read without the executor's lock:
        one dict lookup; a callback added just after runs on the scheduler's thread)."""
        future = self._futures.get(task.group)
        # Future keeps its callbacks in _done_callbacks (CPython, since 3.2); where it
        # does not, every answer goes through the collector.
        return future is not None and bool(getattr(future, "_done_callbacks", True))

    def _finish_answer(self, grp: int, value: bytes) -> None:
        """Settle call ``grp``'s future with its answer as stored (an answer that cannot
        be loaded here fails its future with why)."""
        try:
            answer = decode(_answer_blob(value))
        except Exception as err:
            self._finish(grp, None, err)
        else:
            self._finish(grp, answer, None)

    def _collect(self) -> None:
        store = open_store(self._store.location)
        # The scheduler's sampler checkpoints the WAL about once a second: a burst's
        # commit here never stalls on a checkpoint's copy and fsyncs (a map's first rows
        # waited 4-8 ms for one, every other map).
        store.defer_checkpoints()
        #: the store's count of ended tasks when it was last read for those the
        #: scheduler did not tell of
        read_at = 0
        try:
            while True:
                try:
                    batches = [self._inbox.get(timeout=FALLBACK_S)]
                except queue.Empty:
                    batches = []
                while True:
                    try:
                        batches.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                if self._stop.is_set():
                    return
                self._store_rows(store)
                ended = [e for batch in batches if batch is not None for e in batch]
                self._settle_told(store, ended)
                if not batches and self._futures:
                    # Nothing told for a while: anything the store holds that was not told
                    # (cancelled, lost, a commit that failed for its task) is read there.
                    counts = store.queries.counts(self._job)
                    ended_n = counts["succeeded"] + counts["failed"] + counts["cancelled"]
                    if ended_n > self._told and ended_n != read_at:
                        self._settle_from_store(store)
                        read_at = ended_n
        finally:
            store.close()

    def _store_rows(self, store: Store) -> None:
        """Store the rows submitted since the last time: a large burst's first
        :data:`FIRST_ROWS` in a transaction of their own, so the workers start on them
        while the rest is stored (in one more)."""
        with self._lock:
            rows, self._unstored = self._unstored, []
            groups = self._groups
        if len(rows) > 2 * FIRST_ROWS:
            first, rows = rows[:FIRST_ROWS], rows[FIRST_ROWS:]
            self._store_some(store, first, first[-1].grp + 1)
        self._store_some(store, rows, groups)

    def _store_some(self, store: Store, rows: list[NewTask], groups: int) -> None:
        """Store ``rows`` (the calls' groups below ``groups``) in one transaction, and
        wake the scheduler."""
        if not rows:
            return
        try:
            store.add_tasks(rows, job_id=self._job, groups=groups)
        except Exception as err:  # not stored, so never run: their futures fail with why
            for row in rows:
                self._finish(row.grp, None, err)
            return
        self._runner.tasks_added()

    def _settle_told(self, store: Store, ended: list[TaskEnded]) -> None:
        """Settle the futures of the tasks the scheduler told of: a result from what it
        told; a failure (its attempts and evidence) and a result kept as a blob, from the
        store, which holds them before anything is told."""
        failed = stored = False
        for task in ended:
            if task.failure_class is not None:
                failed = True
            elif task.value is not None:
                self._finish_answer(task.group, task.value)
            else:
                stored = True
        if failed or stored:
            self._settle_from_store(store, results=stored)

    def _settle_from_store(self, store: Store, results: bool = True) -> None:
        """Settle the open futures whose calls the store holds as ended."""
        with self._lock:
            open_groups = set(self._futures)
        rows = store.queries.result_rows(self._job) if results else ()
        for _tid, grp, _rep, _params, _n, value in rows:
            if grp in open_groups:
                if isinstance(value, BaseException):
                    self._finish(grp, None, value)
                else:
                    self._finish_answer(grp, value)
        for record in store.queries.failed_tasks(self._job):
            if record.group in open_groups:
                failure = Failure.from_record(record)
                self._finish(failure.group, None, failure_error(failure))

    def _finish(self, grp: int, answer: object, error: BaseException | None) -> None:
        with self._lock:
            future = self._futures.pop(grp, None)
        if future is None or not future.set_running_or_notify_cancel():
            return
        if error is not None:
            future.set_exception(error)
        else:
            self._settle(future, answer)

    @staticmethod
    def _settle(future: concurrent.futures.Future[object], answer: object) -> None:
        if isinstance(answer, Raised):
            future.set_exception(_rebuilt(answer))
        elif isinstance(answer, Returned):
            future.set_result(answer.value)
        else:  # a map chunk: its answers, read by map
            future.set_result(answer)


def _answer_blob(value: bytes) -> bytes:
    """What :func:`~oomguard.executor.call.run_call` returned, from its stored result."""
    blob = pickle.loads(value)
    assert isinstance(blob, bytes)
    return blob


def _finished_calls(store: Store) -> dict[str, bytes]:
    """The answers of the calls that executors finished on ``store``, by call digest
    (:func:`~oomguard.executor.call.call_digest`, kept as the task's parameters); the
    calls they left unfinished are cancelled."""
    found: dict[str, bytes] = {}
    for job in store.jobs():
        if job.fn != CALL_REF:
            continue
        # What an earlier run left unfinished is this run's to submit again (or not): the
        # scheduler must not run it behind its back.
        if job.state != "cancelled":
            store.admin.cancel(job.id)
        for _tid, _grp, _rep, params, _n, value in store.queries.result_rows(job.id):
            if isinstance(params, str) and not isinstance(value, BaseException):
                digest = json.loads(params).get("call")
                if isinstance(digest, str):
                    found[digest] = _answer_blob(value)
    return found
