"""The Python API: :class:`Runner` and :class:`Job`.

A ``Runner`` owns a scheduler thread (store → admission → workers) and a store connection
of its own for submissions and queries; the store is the only thing the two share.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import pickle
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from oomguard.config import RunnerConfig, load_config
from oomguard.errors import (
    ConfigError,
    JobNotFoundError,
    JobStoppedError,
    OomguardError,
    OutputError,
    PayloadError,
    TaskReferenceError,
)
from oomguard.jobs.model import FINISHED_STATES
from oomguard.jobs.spec import JobSpec, job_spec
from oomguard.jobs.status import Failure, JobStatus
from oomguard.jobs.task import (
    TaskOptions,
    load,
    options_of,
    reference_of,
    refuse_in_worker_import,
)
from oomguard.results.parquet import check_out_dir, table_for
from oomguard.scheduler.endings import Endings
from oomguard.scheduler.rows import TaskRows
from oomguard.scheduler.view import SchedulerView
from oomguard.store.blobs import BLOB_THRESHOLD
from oomguard.store.factory import open_store
from oomguard.store.protocol import Store
from oomguard.store.records import NewTask, StoredSpec
from oomguard.units import parse_size

log = logging.getLogger("oomguard.scheduler")

T = TypeVar("T")

if TYPE_CHECKING:
    import pyarrow as pa

    from oomguard.scheduler.loop import Scheduler

#: parameter sets read and inserted per transaction: short, so the scheduler's commits
#: never wait long for the submission's
CHUNK = 1000
#: Job.wait gives up on Parquet parts when none was written for this long while some were due
PARTS_STALL = 300.0
#: Job.wait asks the store again at least this often even if the scheduler said nothing
WAIT_RECHECK = 2.0


def _memory(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str | int | float):
        raise ConfigError(f"a memory size is a number of bytes or a string, not {value!r:.80}")
    return parse_size(value)


class Runner:
    """Runs jobs on a store: ``with Runner(store="x.sqlite", workers=4) as r: ...``."""

    def __init__(
        self,
        store: str | None = None,
        workers: int | None = None,
        memory_budget: str | int | None = None,
        executor: str | None = None,
        *,
        config: RunnerConfig | None = None,
        **options: object,
    ) -> None:
        refuse_in_worker_import("oomguard.Runner")
        sizes = (
            "worker_memory",
            "task_memory",
            "default_task_memory",
            "memory_reserve",
            "part_bytes",
        )
        for name in sizes:
            if name in options:
                options[name] = _memory(options[name])
        base = config or load_config(env={})
        self.config = base.replace(
            store=store,
            workers=workers,
            memory_budget=_memory(memory_budget),
            executor=executor,
            **options,
        )
        self.store = open_store(self.config.store)
        #: how task rows are built, for every way of submitting
        self.rows = TaskRows(self.config)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        #: what the scheduler loop died of after it started (None while it lives or stops)
        self.died: BaseException | None = None
        self.scheduler: Scheduler | None = None
        #: the tasks of watched jobs, told as they end (the Executor's, in this process)
        self.endings = Endings()

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> Runner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the scheduler thread (idempotent); raises if it cannot start."""
        if self._thread is not None:
            self._raise_if_failed()
            return
        from oomguard.scheduler.loop import Scheduler

        sched = self.scheduler = Scheduler(self.config, self.endings)
        self._thread = threading.Thread(
            target=self._run, args=(sched,), name="oomguard-scheduler", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        self._raise_if_failed()

    def _run(self, sched: Scheduler) -> None:
        try:
            sched.start()
            self._ready.set()
            sched.run(self._stop)
        except BaseException as err:
            if self._ready.is_set():  # it started: not a start-up error
                self.died = err
                if isinstance(err, OomguardError):  # it stopped on purpose, with the reason
                    log.error("the scheduler stopped: %s; stopping its workers", err)
                else:  # a bug of the loop
                    log.error("the scheduler loop died; stopping its workers", exc_info=err)
            self._error = err
        finally:
            self._ready.set()
            try:
                sched.stop()
            except BaseException as err:
                self._error = self._error or err

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def close(self) -> None:
        """Stop the scheduler and its workers; unfinished tasks stay in the store."""
        if self._thread is not None:
            self._stop.set()
            if self.scheduler is not None:
                self.scheduler.wake()  # not waiting out its step
            self._thread.join()
            self._thread = None
        self.store.close()

    def view(self) -> SchedulerView:
        """What the scheduler last published (budget, admitted memory, workers, ...);
        an empty view before it started and after it stopped. Safe from any thread."""
        sched = self.scheduler
        return sched.view() if sched is not None else SchedulerView()

    def set_window(self, size: int) -> None:
        """How many tasks the scheduler keeps in memory (thread-safe)."""
        if self.scheduler is not None:
            self.scheduler.set_window(size)

    def tasks_added(self) -> None:
        """Tell the scheduler that tasks were added to the store (thread-safe): it looks
        for new jobs at its next step instead of at its next periodic look (0.25 s)."""
        if self.scheduler is not None:
            self.scheduler.tasks_added()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- submitting -------------------------------------------------------------------

    def sweep(
        self,
        fn: Callable[..., object] | str,
        params: Iterable[Mapping[str, object]],
        replicates: int | None = None,
        aggregate: Callable[..., object] | str | None = None,
        batch_size: int | None = None,
        out: str | os.PathLike[str] | None = None,
        name: str | None = None,
        title: str | None = None,
        namespace: str = "default",
    ) -> Job:
        """Submit ``fn(**p)`` for each ``p`` in ``params`` (streamed, never materialised).

        With ``replicates=R`` each parameter set runs R times as ``fn(**p, replicate=i)``;
        with ``aggregate``, ``aggregate(p, [results by replicate])`` runs once all R
        succeeded. Results are written under ``out`` as Parquet parts as they finish.
        Submitting a sweep with the same ``name`` (and function) again resumes it;
        ``title`` is only what ``status`` shows (default: the name).
        """
        return self.submit_job(
            job_spec(
                fn,
                params,
                replicates=replicates,
                aggregate=aggregate,
                batch_size=batch_size,
                out=out,
                name=name,
                title=title,
                namespace=namespace,
            )
        )

    def submit_job(self, spec: JobSpec) -> Job:
        """Submit the job ``spec`` describes (:func:`oomguard.jobs.spec.job_spec` builds
        one): what :meth:`sweep` does, for a spec the CLI built."""
        ref, agg_ref = spec.reference, spec.aggregate_reference
        task_fn = load(ref, self.config.task_dir) if isinstance(spec.task, str) else spec.task
        aggregate = spec.aggregate
        agg_fn = (
            (load(agg_ref, self.config.task_dir) if isinstance(aggregate, str) else aggregate)
            if agg_ref
            else None
        )
        replicates, batch_size, name = spec.replicates, spec.batch_size, spec.name
        out, title, namespace, params = spec.out, spec.title, spec.namespace, spec.params
        if out is not None:
            out = str(check_out_dir(out).resolve())
        fingerprint = None
        if name is not None:
            fingerprint = hashlib.sha256(
                json.dumps([ref, agg_ref, replicates, name, out]).encode()
            ).hexdigest()
        job_id = self.store.find_job(fingerprint) if fingerprint else None
        done = 0
        if job_id is not None:
            done, state = self.store.job_groups(job_id)
            if state == "stopped":  # it could not load its task: run again, it may now
                self.store.admin.reopen_stopped(job_id)
                state = "open"
            if state != "open":
                self.start()
                return Job(self, job_id)
        else:
            job_id = uuid.uuid4().hex[:12]
            stored = StoredSpec(replicates=replicates, out=out, batch_size=batch_size)
            self.store.create_job(
                job_id,
                name=title or name or ref,
                fn=ref,
                agg=agg_ref,
                spec=stored,
                fingerprint=fingerprint,
                namespace=namespace,
            )
        self.start()
        opts = options_of(task_fn)
        agg_opts = options_of(agg_fn) if agg_fn is not None else None
        it = iter(params)
        if done:
            it = itertools.islice(it, done, None)
        index = done
        for chunk in _chunks(it, CHUNK):
            rows = []
            for p in chunk:
                rows.extend(
                    self._group_rows(job_id, index, ref, p, opts, replicates, agg_ref, agg_opts)
                )
                index += 1
            self.store.add_tasks(rows, job_id=job_id, groups=index)
            self.tasks_added()
            self._raise_if_failed()
            self._raise_if_stopped(job_id)
        self.store.set_job_groups(job_id, index, sealed=True)
        return Job(self, job_id)

    def _raise_if_stopped(self, job_id: str) -> None:
        if (cause := self.store.admin.stop_cause(job_id)) is not None:
            raise JobStoppedError(f"job {job_id} {cause}", job_id=job_id, cause=cause)

    def _group_rows(
        self,
        job_id: str,
        grp: int,
        ref: str,
        params: object,
        opts: TaskOptions,
        replicates: int | None,
        agg_ref: str | None,
        agg_opts: TaskOptions | None,
    ) -> list[NewTask]:
        if not isinstance(params, dict):
            raise PayloadError(
                f"parameter set {grp} is not a dict of keyword arguments: {params!r:.80}", index=grp
            )
        try:
            text = json.dumps(params, allow_nan=True)
        except (TypeError, ValueError) as err:
            raise PayloadError(
                f"parameter set {grp} is not JSON-serialisable: {err}", index=grp
            ) from err
        common = self.rows.common(self.store, ref, params, text, opts)
        aggregate = None
        if agg_ref is not None and agg_opts is not None:
            aggregate = self.rows.fields(agg_ref, params, agg_opts)
        return self.rows.group(job_id, grp, common, replicates, aggregate)

    def submit(self, fn: Callable[..., object] | str, *args: object, **kwargs: object) -> Job:
        """Submit one call ``fn(*args, **kwargs)`` as a job of one task."""
        ref = reference_of(fn)
        task_fn = load(ref, self.config.task_dir) if isinstance(fn, str) else fn
        try:
            payload = pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            raise PayloadError(
                f"the arguments cannot be pickled: {type(err).__name__}: {err}"
            ) from err
        job_id = uuid.uuid4().hex[:12]
        self.store.create_job(job_id, name=ref, fn=ref, agg=None)
        self.start()
        (row,) = self.rows.group(
            job_id, 0, self.rows.fields(ref, kwargs, options_of(task_fn)), None
        )
        if len(payload) > BLOB_THRESHOLD:
            row = replace(row, payload_ref=self.store.blobs.put(payload))
        else:
            row = replace(row, payload=payload)
        self.store.add_tasks([row], job_id=job_id, groups=1)
        self.store.set_job_groups(job_id, 1, sealed=True)
        self.tasks_added()
        return Job(self, job_id)

    def job(self, job_id: str) -> Job:
        return Job(self, self.store.resolve_job(job_id))


def _chunks(it: Iterator[T], n: int) -> Iterator[list[T]]:
    while True:
        chunk = list(itertools.islice(it, n))
        if not chunk:
            return
        yield chunk


def job_status(store: Store, job_id: str) -> JobStatus:
    """A job's state, counts by state, failures by class and where its results go."""
    return JobStatus.from_record(store.queries.job_status(job_id))


def job_failures(store: Store, job_id: str, limit: int | None = None) -> list[Failure]:
    """The job's tasks that failed for good (the first ``limit``), with their attempts."""
    return [Failure.from_record(f) for f in store.queries.failed_tasks(job_id, limit)]


class Job:
    """A handle on a job in the store."""

    def __init__(self, runner: Runner, job_id: str) -> None:
        self.runner = runner
        self.id = job_id

    def __repr__(self) -> str:
        return f"<oomguard Job {self.id}>"

    def status(self) -> JobStatus:
        """Counts by state, failures by class, and where the results go."""
        return job_status(self.runner.store, self.id)

    def done(self) -> bool:
        _groups, state = self.runner.store.job_groups(self.id)
        return state != "open" and self.runner.store.low_group(self.id) is None

    def wait(self, timeout: float | None = None, progress: bool | None = None) -> JobStatus:
        """Block until every task finished (a progress bar on a terminal); return status().

        Raises :class:`~oomguard.errors.JobStoppedError` if the job was stopped because its
        first attempts all failed loading its task (the error says why)."""
        if progress is None:
            progress = sys.stderr.isatty()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=sum(self.runner.store.queries.counts(self.id).values()),
                unit="task",
                desc=f"job {self.id}",
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        last = 0.0
        sched = self.runner.scheduler
        try:
            while True:
                # Woken by the scheduler when a job finishes or it stops, not by polling;
                # the store is asked again only then (and every WAIT_RECHECK s regardless).
                seen = sched.announcements.count() if sched is not None else 0
                self.runner._raise_if_failed()
                if not self.runner.alive and not self.done():
                    raise OomguardError("the scheduler stopped before the job finished")
                if self.done():
                    break
                if bar is not None and time.monotonic() - last > 1.0:
                    counts = self.runner.store.queries.counts(self.id)
                    bar.total = sum(counts.values())
                    bar.n = sum(counts[s] for s in FINISHED_STATES)
                    bar.set_postfix(failed=counts["failed"], running=counts["running"])
                    bar.refresh()
                    last = time.monotonic()
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    raise TimeoutError(f"job {self.id} did not finish within {timeout} s")
                pause = WAIT_RECHECK if bar is None else 1.0
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - now))
                if sched is not None and self.runner.alive:
                    sched.announcements.wait(seen, pause)
                else:
                    time.sleep(min(pause, 0.05))
        finally:
            if bar is not None:
                counts = self.runner.store.queries.counts(self.id)
                bar.total = sum(counts.values())
                bar.n = sum(counts[s] for s in FINISHED_STATES)
                bar.refresh()
                bar.close()
        # Let the scheduler write the job's last Parquet parts.
        sched = self.runner.scheduler
        if sched is not None and self.runner.alive:
            self._wait_parts(deadline)
        self.runner._raise_if_stopped(self.id)
        return self.status()

    def _wait_parts(self, deadline: float | None) -> None:
        """Wait until every stored result of the job is in a renamed Parquet part.

        The wait asks the scheduler for the job's parts and ends on each event that can
        end it: the parts are written; the part writer failed for this job (its error is
        raised); the scheduler stopped; the caller's deadline passed; or no part was
        written for :data:`PARTS_STALL` seconds while some were due. Each says what it
        waited for.
        """
        store = self.runner.store
        out = store.job(self.id).spec.out
        if not out:
            return
        sched = self.runner.scheduler
        if sched is None:
            return
        last_left, progress_at = None, time.monotonic()
        while (left := store.queries.unwritten_parts(self.id)) > 0:
            self.runner._raise_if_failed()
            now = time.monotonic()
            if left != last_left:
                last_left, progress_at = left, now
                sched.request_parts(self.id)
            if (error := sched.parts_error(self.id)) is not None:
                raise OutputError(
                    f"job {self.id} finished but {left} results could not be written to "
                    f"{out}: {error}; they are kept in the store, and `oomguard run` again "
                    "(or any scheduler on this store) writes them",
                    out=out,
                    unwritten=left,
                )
            if not self.runner.alive and (left := store.queries.unwritten_parts(self.id)) > 0:
                raise OomguardError(
                    f"job {self.id} finished but the scheduler stopped with {left} results not "
                    f"yet written to {out}; the next scheduler on this store writes them"
                )
            if deadline is not None and now > deadline:
                raise TimeoutError(
                    f"job {self.id} finished but {left} results were not yet written to {out}"
                )
            if now - progress_at > PARTS_STALL:
                raise OomguardError(
                    f"job {self.id} finished but no Parquet part was written to {out} for "
                    f"{PARTS_STALL:.0f} s ({left} results waiting); the results are in the "
                    "store: `oomguard results` reads them"
                )
            time.sleep(0.05)

    def results(self, kind: str = "task") -> pa.Table:
        """The job's results as a pyarrow Table (``kind="aggregate"`` for aggregations)."""
        if kind not in ("task", "aggregate"):
            raise JobNotFoundError(f"kind must be task or aggregate, not {kind!r}")
        return table_for(self.runner.store, self.id, kind)

    def failures(self, limit: int | None = None) -> list[Failure]:
        """Tasks that failed for good, with each attempt's class and evidence."""
        return job_failures(self.runner.store, self.id, limit)


__all__ = ["Job", "Runner", "TaskReferenceError", "job_failures", "job_status"]
