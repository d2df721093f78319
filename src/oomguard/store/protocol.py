"""What the rest of oomguard needs of a store, as a typing ``Protocol``: the scheduler, the
API and dashboard, the results sink, the notifications and the CLI use a store only through
:class:`Store`, and get one from :func:`~oomguard.store.factory.open_store`. SQLite
(:class:`~oomguard.store.sqlite.SqliteStore`) is the default backend; PostgreSQL
(:class:`~oomguard.store.postgres.store.PostgresStore`) implements this beside it, and
``tests/contract/test_store.py`` runs against each (docs/ARCHITECTURE.md, "The store").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from oomguard.errors import BlobMissingError
    from oomguard.store.admin import RetryChoice
    from oomguard.store.blobs import GarbageReport
    from oomguard.store.dashboard import (
        FailureQuery,
        FailureRow,
        JobQuery,
        JobRow,
        LearnedEstimate,
        LineageAttempt,
        MemoryNow,
        OpenJob,
        OpenTotals,
    )
    from oomguard.store.leases import Recovery, TakeOver
    from oomguard.store.outbox import OutboxRow
    from oomguard.store.parts import PendingResults
    from oomguard.store.records import (
        AttemptRecord,
        AttemptSpan,
        EventRecord,
        FailedTask,
        JobListing,
        JobProgress,
        JobRecord,
        JobTimes,
        KeyEstimate,
        KillPoint,
        NewTask,
        Quota,
        StoredParams,
        StoredSpec,
        TaskDetail,
        TaskListing,
        TaskRow,
        ThroughputPoint,
    )
    from oomguard.store.samples import Sample
    from oomguard.store.wakeups import Wakeups
    from oomguard.store.writes import Write


class BlobsFacet(Protocol):
    """Large payloads, params and results kept beside the store (``store.blobs``)."""

    def check_dir(self) -> None:
        """Refuse (:class:`~oomguard.errors.StoreError`) a blob directory another user
        owns or may write to: blobs are unpickled, so a planted file would run as this
        user. Checked when the store is opened and again before the first blob is used
        (the directory may be made meanwhile, in a shared place)."""
        ...

    def put(self, data: bytes, *, ahead: bool = False) -> str:
        """Write ``data`` to a file beside the store, named by its hash; return the name."""
        ...

    def get(self, name: str) -> bytes:
        """A blob's bytes; :class:`BlobMissingError` when its file is gone."""
        ...

    def params_of(self, params: str | None, params_ref: str | None) -> str | None:
        """A task's params JSON, read from its blob file when it was too large for the row."""
        ...

    def params_row(self, params: Mapping[str, object] | str) -> StoredParams:
        """``params``/``params_ref`` columns for keyword arguments (large ones in a blob)."""
        ...

    def collect_garbage(self, min_age: float = 3600.0, dry_run: bool = False) -> GarbageReport:
        """Delete blob files no row refers to that are older than ``min_age`` seconds."""
        ...


class PartsFacet(Protocol):
    """Which stored results are in which Parquet part (``store.parts``)."""

    def unwritten(self) -> list[tuple[str, str, int, str]]:
        """``(job_id, kind, n, out)`` of parts assigned but not yet written."""
        ...

    def outputs(self, jobs: Iterable[str] | None) -> dict[str, str]:
        """Output directory by job, for ``jobs`` (None: every job) that have one; a job
        forgotten meanwhile is simply not there."""
        ...

    def pending(self, job_id: str) -> list[PendingResults]:
        """The job's stored results not yet in a part, by kind."""
        ...

    def assign(
        self, job_id: str, kind: str, out: str, max_rows: int, max_bytes: int
    ) -> tuple[int, int, int]:
        """Commit the next part's rows (oldest first, up to the row and byte bounds, at
        least one); return ``(part number, rows, bytes)``."""
        ...

    def written(self, job_id: str, kind: str, n: int) -> None:
        """Part ``n``'s file was renamed into place."""
        ...

    def has_replicates(self, job_id: str) -> bool:
        """Whether the job's tasks are numbered replicates (the rows get the column)."""
        ...


class LeasesFacet(Protocol):
    """Schedulers, their leases, and the recovery of what a dead one left (``store.leases``)."""

    def register(
        self,
        scheduler_id: str,
        lease_ttl: float,
        lost_retries: int = 5,
        *,
        replica: bool = False,
    ) -> Recovery:
        """Register as the store's exclusive scheduler, or as a ``replica`` sharing it;
        end what dead schedulers left running."""
        ...

    def take_over_dead(
        self, scheduler_id: str, lease_ttl: float, lost_retries: int = 5
    ) -> list[TakeOver]:
        """Replica ``scheduler_id`` takes over each dead scheduler, one transaction each
        (marked taken over, its running attempts lost, its tasks ready, its locks free)."""
        ...

    def reserve_attempt_ids(self, n: int = ...) -> int:
        """Reserve ``n`` attempt ids no other scheduler will use; return the first."""
        ...

    def take_lock(self, key: str, attempt_id: int, task_id: int, scheduler_id: str) -> bool:
        """Replica ``scheduler_id`` takes lock ``key`` for attempt ``attempt_id`` (about to
        start), in a transaction of its own: whether it got it."""
        ...

    def drop_lock(self, key: str, attempt_id: int, scheduler_id: str) -> None:
        """Give back lock ``key`` taken for attempt ``attempt_id``, which did not start."""
        ...

    def claim_job_notice(self, job_id: str, state: str) -> bool:
        """Whether this scheduler tells that ``job_id`` is now ``state`` (the first to
        claim it: replicas tell each job change once)."""
        ...

    def requeue_tasks(self, task_ids: Sequence[int], scheduler_id: str) -> None:
        """A stopping scheduler hands its tasks back: ready again, its locks released."""
        ...

    def heartbeat(self, scheduler_id: str) -> None:
        """Renew the lease; :class:`~oomguard.errors.TakenOverError` if taken over."""
        ...

    def unregister(self, scheduler_id: str) -> None: ...


class QueriesFacet(Protocol):
    """What users read: a job, counts, failures, attempts, results, listings (``store.queries``)."""

    def job(self, job_id: str) -> JobRecord: ...

    def jobs(self) -> list[JobRecord]: ...

    def stop_cause(self, job_id: str) -> str | None:
        """Why the job was stopped (``Admin.stop_job``), or None if it was not."""
        ...

    def counts(self, job_id: str) -> dict[str, int]: ...

    def recent_jobs(
        self, limit: int, namespaces: Collection[str] | None = None
    ) -> list[JobListing]:
        """The newest ``limit`` jobs (of ``namespaces``; None: of all)."""
        ...

    def task_list(
        self,
        job_id: str,
        *,
        state: str | None = None,
        failure_class: str | None = None,
        limit: int = 100,
        after: int | None = None,
        params: bool = False,
    ) -> list[TaskListing]:
        """The job's tasks in id order after task ``after``, filtered by state and failure
        class. With ``params``, each row's ``params`` is its JSON text where the row holds
        it; ``params_in_blob`` says they are in a blob file, which is never read here (rows
        of a batch share one blob: a listing would read and parse it once per row)."""
        ...

    def open_tasks_by_job(self) -> dict[str, int]:
        """Unfinished tasks by job (the index ``tasks_state``: only open tasks are read)."""
        ...

    def job_namespace(self, job_id: str) -> str | None: ...

    def task_states(self, namespaces: Collection[str] | None = None) -> dict[str, int]:
        """Tasks of every job (or of the jobs of ``namespaces``) by state."""
        ...

    def failed_tasks_by_class(self) -> dict[tuple[str, str], int]:
        """Tasks failed for good, by (final class, function)."""
        ...

    def ended_attempts_upper(self) -> int:
        """Attempts are ended in id order up to the oldest running one: every attempt with
        an id up to the returned one has ended."""
        ...

    def attempt_failures_between(self, low: int, high: int) -> dict[tuple[str, str], int]:
        """Failed attempts with ``low < id <= high`` by (class, function)."""
        ...

    def job_status(self, job_id: str) -> JobProgress:
        """A job's state, counts by state, failures by class and where its results go."""
        ...

    def failures_by_class(self, job_id: str) -> dict[str, int]:
        """Failed attempts of the job by failure class (every attempt, retried or not)."""
        ...

    def failed_tasks(self, job_id: str, limit: int | None = None) -> list[FailedTask]:
        """Tasks that failed for good, each with its attempts and their evidence."""
        ...

    def job_times(self, job_id: str) -> JobTimes:
        """When the job's first attempt started, its last one ended, and how many run."""
        ...

    def job_estimates(self, job_id: str) -> list[KeyEstimate]:
        """The learned estimate of each memory key the job's tasks use (without the
        spread of its peaks or the proof of an unfit key: ``estimate_rows`` has them)."""
        ...

    def task(self, task_id: int) -> TaskDetail | None:
        """One task: its job, function, state, final class and error (params as JSON text,
        or ``params_in_blob``); None when there is no such task."""
        ...

    def attempts(self, task_id: int) -> list[AttemptRecord]:
        """A task's attempts in order, with their evidence."""
        ...

    def all_attempts(self, job_id: str) -> Iterator[AttemptSpan]:
        """Every attempt of the job in order, with its task's memory key."""
        ...

    def group_results(
        self, job_id: str, grp: int
    ) -> list[tuple[int | None, bytes | None, str | None]]:
        """The stored results of a group's replicates, by replicate, unread: ``(attempt
        id, value, value_ref)``, the attempt whose result was stored (the Dask executor
        sends the results it holds by attempt: docs/ARCHITECTURE.md, "Dask")."""
        ...

    def result_rows(
        self, job_id: str, kind: str = "task", part: int | None = None
    ) -> Iterator[
        tuple[int, int, int | None, str | BlobMissingError | None, int, bytes | BlobMissingError]
    ]:
        """``(task_id, grp, replicate, params, attempts, pickled value)`` of stored results."""
        ...

    def events(self, job_id: str, limit: int = 100) -> list[EventRecord]:
        """The job's newest ``limit`` events, oldest first."""
        ...

    def unwritten_parts(self, job_id: str) -> int:
        """Stored results of the job not yet in a Parquet part, plus parts not yet renamed."""
        ...

    def meta(self, key: str) -> str | None: ...

    def counter(self, name: str) -> int: ...


class AdminFacet(Protocol):
    """What users do: retry, cancel, stop, reopen, forget, meta keys (``store.admin``)."""

    def set_meta(self, key: str, value: str) -> None: ...

    def add_counter(self, name: str, delta: int) -> None: ...

    def retry_failed(self, job_id: str) -> int:
        """Make the job's failed tasks ready again with fresh retry counts."""
        ...

    def count_chosen(self, job_id: str, choice: RetryChoice) -> int:
        """How many tasks :meth:`retry_chosen` would make ready now (with an empty
        choice: how many :meth:`retry_failed` would, its aggregations included)."""
        ...

    def retry_chosen(self, job_id: str, choice: RetryChoice) -> int:
        """Make the job's failed tasks that ``choice`` names ready again with fresh retry
        counts (as :meth:`retry_failed` does), raising their declared memory if it says."""
        ...

    def count_open(self, job_id: str) -> int:
        """How many tasks :meth:`cancel` would cancel now (the job's open tasks)."""
        ...

    def cancel(self, job_id: str) -> int:
        """Cancel the job's unfinished tasks (a running attempt is stopped by its scheduler)."""
        ...

    def stop_job(self, job_id: str, cause: str) -> int:
        """Stop a job that cannot run (its first attempts all failed loading its task):
        its unfinished tasks are cancelled with ``cause`` as their error, the job's state is
        ``stopped`` (shown as ``failed``), and ``cause`` is kept in a ``job_stopped`` event.
        Running the same sweep again reopens it (:meth:`reopen_stopped`)."""
        ...

    def stop_cause(self, job_id: str) -> str | None:
        """Why the job was stopped (:meth:`stop_job`), or None if it was not."""
        ...

    def reopen_stopped(self, job_id: str) -> int:
        """Make a stopped job runnable again (its task was fixed): the tasks it cancelled
        and those that failed become ready with fresh retry counts; the job is open."""
        ...

    def forget_job(self, job_id: str, force: bool = False) -> dict[str, int]:
        """Delete a finished job's rows: tasks, attempts, results, parts, events, samples."""
        ...


class RetentionFacet(Protocol):
    """What retention reads and deletes (``store.retention``)."""

    def expired_jobs(self, cutoff: float, limit: int) -> list[str]:
        """Up to ``limit`` finished jobs (sealed or cancelled, no open task) whose last
        task changed before ``cutoff`` (a job is older than its tasks: created_at first)."""
        ...

    def release_finished(self) -> int:
        """Delete the lock rows still held by finished or cancelled tasks (a task's
        dependencies are a count on its own row, so these are the rows a finished task
        can leave behind); the number deleted."""
        ...

    def forget_events(self, cutoff: float) -> int:
        """Delete store-wide events (``job_forgotten`` and the like) older than ``cutoff``."""
        ...

    def vacuum(self) -> tuple[int, int]:
        """Compact the SQLite file (``VACUUM``, then a WAL checkpoint): its size in bytes
        before and after. Needs free disk of about the store's size; it waits for (and
        then blocks) other writers while it runs."""
        ...


class SamplesFacet(Protocol):
    """The dashboard's time series (``store.samples``)."""

    def available(self) -> bool:
        """Whether the store has the table: a store of schema version < 4 opened read-only
        (``oomguard ui``) cannot be migrated, and simply has no series."""
        ...

    def record(self, samples: Sequence[Sample]) -> None:
        """Insert ``samples`` in one transaction."""
        ...

    def count(self, job_id: str) -> int: ...

    def series(self, job_id: str, max_points: int = 600) -> list[Sample]:
        """The job's samples in time order, at most about ``max_points`` (evenly thinned)."""
        ...

    def prune(self, older_than: float, max_per_job: int, jobs: Iterable[str] = ()) -> int:
        """Delete samples taken before ``older_than``; of each of ``jobs`` (those sampled
        lately: only they can have grown) with more than ``max_per_job`` rows, delete every
        second row of its older half (a long job keeps its whole span at a coarser step).
        Short transactions on indexes: a scheduler writing the store waits little. Returns
        the rows deleted."""
        ...

    def throughput(self, job_id: str, max_points: int = 300) -> list[ThroughputPoint]:
        """Attempts of the job ended per interval: ``t`` (start of the interval),
        ``step`` (seconds), ``succeeded``, ``failed`` (attempts), and ``done``: tasks
        finished for good by the end of the interval (succeeded, or failed at their last
        attempt)."""
        ...

    def kills(self, job_id: str, limit: int = 500) -> list[KillPoint]:
        """The job's attempts that ran out of memory (OOM kills, ``memory_error``), in time
        order: when, class, memory key, limit, task and attempt."""
        ...


class DashboardFacet(Protocol):
    """What the dashboard's own pages read (``store.dashboard``)."""

    def lineage(self, task_id: int) -> list[LineageAttempt]:
        """The task's attempts in order (empty: no such task, or none started)."""
        ...

    def key_estimate(self, key: str) -> LearnedEstimate | None:
        """The learned estimate of memory key ``key`` (None: nothing learned yet)."""
        ...

    def failures(
        self, query: FailureQuery, namespaces: Collection[str] | None, limit: int
    ) -> list[FailureRow]:
        """A page of at most ``limit`` tasks that failed for good, newest first, of
        ``namespaces`` (None: of all), filtered by ``query``."""
        ...

    def jobs(self, query: JobQuery, namespaces: Collection[str] | None, limit: int) -> list[JobRow]:
        """A page of at most ``limit`` jobs, newest first, of ``namespaces`` (None: of
        all), filtered by ``query``."""
        ...

    def open_work(self, namespaces: Collection[str] | None, limit: int) -> list[OpenJob]:
        """The first ``limit`` jobs of ``namespaces`` (None: of all) with tasks that may
        still run, most running first, each with the memory its attempts were admitted at
        the latest sample."""
        ...

    def open_totals(self, namespaces: Collection[str] | None) -> OpenTotals:
        """The tasks of ``namespaces`` (None: of all) running and waiting, overall."""
        ...

    def memory_now(self) -> MemoryNow | None:
        """The scheduler's latest sample of the budget and what is admitted against it
        (None: no sample taken)."""
        ...


class OutboxFacet(Protocol):
    """Notices waiting for the webhooks, and each receiver's cursor (``store.outbox``)."""

    def add(self, ts: float, kind: str, notice: str) -> int:
        """A row in a transaction of its own (a job's notice); its id."""
        ...

    def name(self) -> str:
        """This store's name in delivery ids (made once, kept in ``meta``)."""
        ...

    def cursor(self, receiver: str) -> int:
        """``receiver``'s cursor; a new receiver starts after the rows there are now."""
        ...

    def hold(self, receiver: str, holder: str, seconds: float) -> int | None:
        """Hold ``receiver``'s cursor for scheduler ``holder`` (renewed each call): its
        cursor, or None while another scheduler holds it (one delivers at a time)."""
        ...

    def after(self, cursor: int, limit: int) -> list[OutboxRow]:
        """The rows after ``cursor``, in order."""
        ...

    def advance(self, receiver: str, delivered: int) -> None: ...

    def trim(self, receivers: Sequence[str], most: int) -> int:
        """Delete the rows every one of ``receivers`` has passed, then the oldest beyond
        ``most`` rows (counted in ``outbox_dropped``); the number dropped."""
        ...

    def count_after(self, cursor: int) -> int:
        """Rows after ``cursor`` (what a receiver there has still to deliver)."""
        ...

    def waiting(self) -> int:
        """Rows in the outbox (not yet passed by every receiver)."""
        ...

    def dropped(self) -> int: ...


class Store(Protocol):
    """oomguard's durable state: jobs, tasks, attempts, results, events, locks, estimates.

    The facets (each a Protocol above) group what each part of oomguard reads or does; the
    methods on the store itself are the scheduler's hot path and a job's life (create,
    fill, seal)."""

    @property
    def path(self) -> Path:
        """Where the store is (a file for SQLite), for messages and the files beside it."""
        ...

    @property
    def location(self) -> str:
        """What :func:`~oomguard.store.factory.open_store` takes to open the store again
        (a path, or a PostgreSQL URL with its password: never shown)."""
        ...

    @property
    def blobs(self) -> BlobsFacet:
        """Large payloads, params and results, kept beside the store."""
        ...

    @property
    def parts(self) -> PartsFacet:
        """Which stored results are in which Parquet part."""
        ...

    @property
    def leases(self) -> LeasesFacet:
        """Schedulers, their leases, and the recovery of what a dead one left."""
        ...

    @property
    def queries(self) -> QueriesFacet:
        """What users read: counts, failures, attempts, results, listings."""
        ...

    @property
    def admin(self) -> AdminFacet:
        """What users do: retry, cancel, forget, meta keys."""
        ...

    @property
    def samples(self) -> SamplesFacet:
        """The dashboard's time series."""
        ...

    @property
    def retention(self) -> RetentionFacet:
        """What retention reads and deletes."""
        ...

    @property
    def outbox(self) -> OutboxFacet:
        """Notices waiting for the webhooks, and each receiver's cursor."""
        ...

    @property
    def dashboard(self) -> DashboardFacet:
        """What the dashboard's own pages read: retry lineage, a key's estimate."""
        ...

    def close(self) -> None: ...

    def listen(self, wake: Callable[[], None]) -> Wakeups:
        """Call ``wake()`` (from another thread) when another process makes tasks ready
        in this store, until the answer is closed: a listener on PostgreSQL, nothing on
        SQLite (:mod:`oomguard.store.wakeups`). A wake-up may come with nothing new."""
        ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: object) -> None: ...

    def next_attempt_id(self) -> int: ...

    def create_job(
        self,
        job_id: str,
        *,
        name: str,
        fn: str,
        agg: str | None,
        spec: StoredSpec | None = None,
        fingerprint: str | None = None,
        namespace: str = "default",
        quota: Quota | None = None,
    ) -> None:
        """Insert a job; with ``quota``, only if its tasks fit the store's pending tasks and
        its namespace's, checked in the same transaction (every replica's tasks counted)."""
        ...

    def find_job(self, fingerprint: str) -> str | None: ...

    def job(self, job_id: str) -> JobRecord: ...

    def jobs(self) -> list[JobRecord]: ...

    def resolve_job(self, prefix: str | None, *, whole: bool = False) -> str:
        """A job id from a unique prefix, or the newest job when ``prefix`` is None."""
        ...

    def add_tasks(
        self,
        rows: Sequence[NewTask],
        *,
        job_id: str | None = None,
        groups: int | None = None,
    ) -> None:
        """Insert tasks in one transaction."""
        ...

    def set_job_groups(self, job_id: str, groups: int, *, sealed: bool) -> None: ...

    def job_groups(self, job_id: str) -> tuple[int, str]: ...

    def active_jobs(self) -> list[str]:
        """Jobs with tasks that are not finished, oldest first."""
        ...

    def low_group(self, job_id: str) -> int | None: ...

    def take_ready(
        self, job_id: str, limit: int, grp_limit: int, owner: str | None = None
    ) -> list[TaskRow]:
        """Move up to ``limit`` ready tasks into the window of scheduler ``owner`` (state
        ``queued``, owned by it) in one transaction; none once it was taken over."""
        ...

    def checkpoint(self) -> None:
        """Copy the WAL's committed pages into the store file, waiting for no one
        (SQLite; nothing on PostgreSQL)."""
        ...

    def defer_checkpoints(self) -> None:
        """Leave the WAL's checkpoints to another connection's :meth:`checkpoint`, this
        one checkpointing only far later, a fallback (SQLite; nothing on PostgreSQL)."""
        ...

    def read_ready(
        self, job_id: str, limit: int, grp_limit: int, held: Iterable[int] = ()
    ) -> list[TaskRow]:
        """Up to ``limit`` ready tasks not among ``held``, read and left ready (a
        scheduler that owns the store alone takes its window without a write)."""
        ...

    def next_not_before(self, job_id: str) -> float | None: ...

    def group_inputs(self, job_id: str, grp: int) -> tuple[str | None, list[bytes]]:
        """The params of a group and its replicates' pickled results, by replicate."""
        ...

    def apply(
        self,
        writes: Iterable[Write],
        estimates: Sequence[KeyEstimate] = (),
        scheduler_id: str | None = None,
    ) -> int:
        """Commit queued writes (:class:`~oomguard.store.writes.PendingWrites`), and the
        memory keys' ``estimates`` they taught (rows as :meth:`put_estimates` takes), in
        one transaction; with ``scheduler_id``, fenced: nothing commits once it was taken
        over (:class:`~oomguard.errors.TakenOverError`)."""
        ...

    def estimates(self) -> dict[str, tuple[int, int, int]]:
        """``{memory_key: (estimate, largest peak, samples)}``."""
        ...

    def estimate_rows(self) -> dict[str, KeyEstimate]:
        """Everything each memory key is known to need (``scheduler/admission.py``)."""
        ...

    def put_estimates(self, rows: Iterable[KeyEstimate]) -> None:
        """Upsert what memory keys are known to need."""
        ...

    def task_place(self, task_id: int) -> tuple[str, int, str] | None:
        """``(job_id, group, kind)`` of a task, or None if there is no such task."""
        ...

    def task_state(self, task_id: int) -> str | None: ...

    def cancelled_among(self, task_ids: Sequence[int]) -> set[int]: ...


__all__ = [
    "AdminFacet",
    "BlobsFacet",
    "DashboardFacet",
    "LeasesFacet",
    "OutboxFacet",
    "PartsFacet",
    "QueriesFacet",
    "RetentionFacet",
    "SamplesFacet",
    "Store",
]
