"""What the rest of oomguard needs of a store, as a typing ``Protocol``: the scheduler, the
API and dashboard, the results sink, the notifications and the CLI use a store only through
:class:`Store`, and get one from :func:`~oomguard.store.factory.open_store`. SQLite
(:class:`~oomguard.store.sqlite.SqliteStore`) is the one backend today; a second one (issue
29: PostgreSQL) implements this beside it, and ``tests/contract/test_store.py`` runs against
each (docs/ARCHITECTURE.md, "The store").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from oomguard.store.admin import Admin, Retention
    from oomguard.store.blobs import BlobFiles
    from oomguard.store.leases import Leases
    from oomguard.store.outbox import Outbox
    from oomguard.store.parts import PartBook
    from oomguard.store.records import JobRecord, JobSpec, TaskRow
    from oomguard.store.samples import Samples
    from oomguard.store.views import Queries
    from oomguard.store.writes import Write


class Store(Protocol):
    """oomguard's durable state: jobs, tasks, attempts, results, events, locks, estimates.

    The facets below group what each part of oomguard reads or does; the methods on the
    store itself are the scheduler's hot path and a job's life (create, fill, seal)."""

    #: where the store is (a file for SQLite), for messages and the files beside it
    path: Path
    #: large payloads, params and results, kept beside the store
    blobs: BlobFiles
    #: which stored results are in which Parquet part
    parts: PartBook
    #: schedulers, their leases, and the recovery of what a dead one left
    leases: Leases
    #: what users read: counts, failures, attempts, results, listings
    queries: Queries
    #: what users do: retry, cancel, forget, meta keys
    admin: Admin
    #: the dashboard's time series
    samples: Samples
    #: what retention reads and deletes
    retention: Retention
    #: notices waiting for the webhooks, and each receiver's cursor
    outbox: Outbox

    def close(self) -> None: ...

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
        spec: JobSpec | None = None,
        fingerprint: str | None = None,
        namespace: str = "default",
    ) -> None: ...

    def find_job(self, fingerprint: str) -> str | None: ...

    def job(self, job_id: str) -> JobRecord: ...

    def jobs(self) -> list[JobRecord]: ...

    def resolve_job(self, prefix: str | None, *, whole: bool = False) -> str:
        """A job id from a unique prefix, or the newest job when ``prefix`` is None."""
        ...

    def add_tasks(
        self,
        rows: Sequence[dict[str, Any]],
        *,
        job_id: str | None = None,
        groups: int | None = None,
    ) -> None:
        """Insert tasks (dicts with the tasks table's columns) in one transaction."""
        ...

    def set_job_groups(self, job_id: str, groups: int, *, sealed: bool) -> None: ...

    def job_groups(self, job_id: str) -> tuple[int, str]: ...

    def active_jobs(self) -> list[str]:
        """Jobs with tasks that are not finished, oldest first."""
        ...

    def low_group(self, job_id: str) -> int | None: ...

    def take_ready(self, job_id: str, limit: int, grp_limit: int) -> list[TaskRow]:
        """Move up to ``limit`` ready tasks into the scheduler's window (state ``queued``)."""
        ...

    def next_not_before(self, job_id: str) -> float | None: ...

    def group_inputs(self, job_id: str, grp: int) -> tuple[str | None, list[bytes]]:
        """The params of a group and its replicates' pickled results, by replicate."""
        ...

    def apply(self, writes: Iterable[Write], estimates: Sequence[Sequence[Any]] = ()) -> int:
        """Commit queued writes (:class:`~oomguard.store.writes.PendingWrites`), and the
        memory keys' ``estimates`` they taught (rows as :meth:`put_estimates` takes), in
        one transaction."""
        ...

    def estimates(self) -> dict[str, tuple[int, int, int]]:
        """``{memory_key: (estimate, largest peak, samples)}``."""
        ...

    def estimate_rows(self) -> dict[str, dict[str, Any]]:
        """Everything each memory key is known to need (``scheduler/admission.py``)."""
        ...

    def put_estimates(self, rows: Iterable[Sequence[Any]]) -> None:
        """Upsert ``(key, bytes, peak_bytes, samples[, killed_at, unfit_cap, proof,
        peak_sum, peak_sq])`` rows."""
        ...

    def task_place(self, task_id: int) -> tuple[str, int, str] | None:
        """``(job_id, group, kind)`` of a task, or None if there is no such task."""
        ...

    def task_state(self, task_id: int) -> str | None: ...

    def cancelled_among(self, task_ids: Sequence[int]) -> set[int]: ...


__all__ = ["Store"]
