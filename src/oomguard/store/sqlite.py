"""The SQLite store (WAL mode).

The schema lives in ``sql/migrations/NNNN_*.sql`` and the named queries of the hot path in
``sql/queries.sql``. One connection per ``SqliteStore``; use one store object per thread.

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL`` keeps every committed
transaction across a crash of the process (the case oomguard is built for: SIGKILL by the
OOM killer); only a power loss can drop the last transactions. ``OOMGUARD_SQLITE_SYNC=FULL``
fsyncs every commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import groupby
from operator import attrgetter
from pathlib import Path

from oomguard.errors import (
    BackpressureError,
    BlobMissingError,
    JobNotFoundError,
    StoreError,
    TakenOverError,
    too_many_namespaces,
)
from oomguard.store import estimates as key_estimates
from oomguard.store.admin import Admin, Retention
from oomguard.store.blobs import BLOB_THRESHOLD, BlobFiles
from oomguard.store.connection import Transaction
from oomguard.store.dashboard import DashboardReads
from oomguard.store.db import Db
from oomguard.store.failures import translated
from oomguard.store.leases import Leases
from oomguard.store.outbox import Outbox
from oomguard.store.ownership import check_store_files
from oomguard.store.parts import PartBook
from oomguard.store.queries import POSITIONAL, Q, SqlParams
from oomguard.store.records import JobRecord, KeyEstimate, NewTask, Quota, StoredSpec, TaskRow
from oomguard.store.samples import Samples
from oomguard.store.schema import migrate, open_connection
from oomguard.store.views import Queries
from oomguard.store.wakeups import NoWakeups, Wakeups
from oomguard.store.writes import AttemptRow, Write, safe_params

#: jobs whose having aggregations a store remembers (then it asks again)
AGGREGATES_KNOWN = 4096
#: how long (seconds) a submission's reservation counts while its tasks are written: one
#: cut off by a crash stops holding room after this
RESERVATION_HELD = 600.0
#: the Retry-After proposed when a quota refuses a submission (seconds)
RETRY_LATER = 1.0


@translated
class SqliteStore:
    """oomguard's durable state in one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        readonly: bool = False,
        busy_timeout: float = 30.0,
    ) -> None:
        """Open (or, with ``create``, make) the store at ``path``. ``readonly`` opens an
        existing store without writing anything to it (``mode=ro``: no migration, no
        journal mode change; safe beside a live scheduler), for ``oomguard ui``.
        ``busy_timeout``: how long a statement waits for another process's write lock
        (seconds)."""
        self.path = Path(path)
        #: what :func:`~oomguard.store.factory.open_store` takes to open it again
        self.location = os.fspath(path)
        create = create and not readonly
        if self.path.is_dir():
            raise StoreError(f"store path {str(self.path)!r} is a directory", path=str(path))
        if not self.path.exists() and not create:
            raise StoreError(f"no store at {str(self.path)!r}", path=str(path))
        if not self.path.parent.exists():
            raise StoreError(
                f"cannot create store {str(self.path)!r}: directory does not exist",
                path=str(path),
            )
        check_store_files(self.path)  # before anything is read: it would be unpickled
        existed = self.path.exists() and self.path.stat().st_size > 0
        if not self.path.exists():
            # Private to its owner (SQLite gives its -wal and -shm files the same mode):
            # it holds every task's arguments and results, pickles among them.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        self._conn = open_connection(
            self.path, readonly=readonly, existed=existed, busy_timeout=busy_timeout
        )
        #: the SQLite connection (tests and the store's own modules read through it)
        self.db = self._conn.db
        self._writer = self._conn.writer
        if not readonly:
            with self.transaction():
                migrate(self.db)
        self._has_aggregates: dict[str, bool] = {}
        self.blob_dir = self.path.with_name(self.path.name + ".blobs")
        #: large payloads, params and results, in files beside the store
        self.blobs = BlobFiles(self._conn, self.blob_dir)
        #: which stored results are in which Parquet part
        self.parts = PartBook(self._conn)
        #: schedulers, their leases, and the recovery of what a dead one left
        self.leases = Leases(self._conn)
        #: what users read: counts, failures, attempts, results, listings
        self.queries = Queries(self._conn, self.blobs)
        #: what users do: retry, cancel, forget, meta keys
        self.admin = Admin(self._conn, self.queries)
        #: the dashboard's time series (memory, workers' RSS, attempts over time)
        self.samples = Samples(self._conn)
        #: what retention reads and deletes; VACUUM
        self.retention = Retention(self._conn)
        #: notices waiting for the webhooks, and each receiver's cursor
        self.outbox = Outbox(self._conn, self.queries)
        #: what the dashboard's own pages read (retry lineage, a key's estimate)
        self.dashboard = DashboardReads(self._conn)

    def close(self) -> None:
        self.db.close()

    def listen(self, wake: Callable[[], None]) -> Wakeups:
        """Nothing to listen to: a scheduler finds other processes' tasks by its poll."""
        return NoWakeups()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions -----------------------------------------------------------------

    def transaction(self) -> Transaction:
        """``with store.transaction() as db:`` — one IMMEDIATE transaction.

        This process's connections to one store write one at a time (:func:`writer_lock`):
        a thread waiting for another's transaction wakes as it ends."""
        return self._conn.transaction()

    def checkpoint(self) -> None:
        """Copy the WAL's committed pages into the store file, waiting for no one
        (SQLite's ``PASSIVE`` checkpoint; nothing on PostgreSQL)."""
        self.db.execute(Q["wal_checkpoint_passive"]).fetchall()

    def defer_checkpoints(self) -> None:
        """Leave the WAL's checkpoints to another connection's :meth:`checkpoint`: this
        one checkpoints at its commits only past 10,000 pages, a fallback (SQLite's
        ``wal_autocheckpoint``; nothing on PostgreSQL)."""
        self.db.execute(Q["wal_autocheckpoint_late"]).fetchall()

    def next_attempt_id(self) -> int:
        row = self.db.execute(Q["next_attempt_id"]).fetchone()
        return int(row[0]) + 1

    # -- jobs and tasks ---------------------------------------------------------------

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
        """Insert a job. With ``quota``, first check that its tasks fit the store's pending
        tasks (every scheduler's) and its namespace's, in the same transaction
        (:class:`~oomguard.errors.BackpressureError` if not), and hold their room."""
        now = time.time()
        with self.transaction() as db:
            if quota is not None:
                self._check_quota(db, quota, namespace, now)
            db.execute(
                Q["create_job"],
                (
                    job_id,
                    name,
                    namespace,
                    fn,
                    agg,
                    (spec or StoredSpec()).to_json(),
                    fingerprint,
                    now,
                    quota.tasks if quota is not None else 0,
                ),
            )
            db.execute(
                Q["insert_event"],
                {
                    "ts": time.time(),
                    "job_id": job_id,
                    "task_id": None,
                    "kind": "job_created",
                    "data": json.dumps({"name": name}),
                },
            )

    @staticmethod
    def _check_quota(db: Db, quota: Quota, namespace: str, now: float) -> None:
        since = now - RESERVATION_HELD
        n = quota.tasks
        db.execute(Q["lock_quotas"])  # PostgreSQL: count and reserve, one at a time
        if quota.max_pending is not None:
            (pending,) = db.execute(Q["pending_tasks"], {"since": since}).fetchone()
            if pending + n > quota.max_pending:
                raise BackpressureError(
                    f"the store has {pending} pending tasks; {n} more would exceed "
                    f"--max-pending-tasks {quota.max_pending}: retry later",
                    code="queue_full",
                    retry_after=RETRY_LATER,
                    pending=pending,
                    limit=quota.max_pending,
                )
        if quota.namespace_quota is not None:
            (pending,) = db.execute(
                Q["namespace_pending_tasks"], {"since": since, "ns": namespace}
            ).fetchone()
            if pending + n > quota.namespace_quota:
                raise BackpressureError(
                    f"namespace {namespace!r} has {pending} pending tasks; {n} more would "
                    f"exceed its quota of {quota.namespace_quota}: retry later",
                    code="namespace_quota",
                    retry_after=RETRY_LATER,
                    pending=pending,
                    limit=quota.namespace_quota,
                )
        elif quota.max_namespaces is not None:
            active = {
                str(row[0])
                for row in db.execute(
                    Q["active_namespaces"],
                    {"since": since, "quoted": json.dumps(list(quota.quoted))},
                )
            }
            if namespace not in active and len(active) >= quota.max_namespaces:
                raise too_many_namespaces(len(active), quota.max_namespaces, namespace, RETRY_LATER)

    def find_job(self, fingerprint: str) -> str | None:
        row = self.db.execute(Q["find_job"], (fingerprint,)).fetchone()
        return str(row[0]) if row else None

    def job(self, job_id: str) -> JobRecord:
        return self.queries.job(job_id)

    def jobs(self) -> list[JobRecord]:
        return self.queries.jobs()

    def resolve_job(self, prefix: str | None, *, whole: bool = False) -> str:
        """A job id from a unique prefix, or the newest job when ``prefix`` is None.

        ``whole``: only a whole id (the HTTP API: a client names a job it was given).
        """
        if whole:
            if prefix is None:
                raise JobNotFoundError("no job id given", job_id=None)
            row = self.db.execute(Q["job_id_exact"], (prefix,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"no job {prefix!r}", job_id=prefix)
            return str(row[0])
        if prefix is None:
            row = self.db.execute(Q["newest_job"]).fetchone()
            if row is None:
                raise JobNotFoundError(f"store {self._conn.where!r} has no jobs", job_id=None)
            return str(row[0])
        rows = self.db.execute(Q["job_ids_by_prefix"], (prefix, prefix + "%")).fetchall()
        exact = [r[0] for r in rows if r[0] == prefix]
        if whole:
            return str(exact[0])
        if len(rows) == 1:
            return str(rows[0][0])
        if not rows:
            raise JobNotFoundError(
                f"no job {prefix!r} in store {self._conn.where!r}", job_id=prefix
            )
        raise JobNotFoundError(f"job id prefix {prefix!r} is ambiguous", job_id=prefix)

    def add_tasks(
        self,
        rows: Sequence[NewTask],
        *,
        job_id: str | None = None,
        groups: int | None = None,
    ) -> None:
        """Insert tasks in one transaction.

        With ``job_id`` and ``groups``, the job's count of inserted groups is updated in the
        same transaction, so an interrupted submission resumes where it stopped.
        """
        now = time.time()
        with self.transaction() as db:
            if rows:
                db.executemany(
                    Q["insert_task"],
                    [
                        (
                            r.job_id,
                            r.grp,
                            r.kind,
                            r.replicate,
                            r.fn,
                            r.params,
                            r.params_ref,
                            r.payload,
                            r.payload_ref,
                            r.state,
                            r.deps,
                            r.retries,
                            r.oom_retries,
                            r.timeout,
                            r.memory,
                            r.memory_key,
                            r.lock_key,
                            now,
                        )
                        for r in rows
                    ],
                )
            if job_id is not None and groups is not None:
                db.execute(Q["set_total_groups"], (groups, job_id))
            if rows:
                self._conn.tasks_ready(db)  # other replicas look now (PostgreSQL)

    def set_job_groups(self, job_id: str, groups: int, *, sealed: bool) -> None:
        with self.transaction() as db:
            db.execute(
                Q["seal_job"],
                (groups, sealed, job_id),
            )

    def job_groups(self, job_id: str) -> tuple[int, str]:
        row = self.db.execute(Q["job_groups"], (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}", job_id=job_id)
        return int(row[0]), str(row[1])

    def active_jobs(self) -> list[str]:
        """Jobs with tasks that are not finished, oldest first."""
        rows = self.db.execute(Q["active_jobs"]).fetchall()
        return [str(r[0]) for r in rows]

    def low_group(self, job_id: str) -> int | None:
        row = self.db.execute(Q["low_group"], {"job_id": job_id}).fetchone()
        return None if row[0] is None else int(row[0])

    def take_ready(
        self, job_id: str, limit: int, grp_limit: int, owner: str | None = None
    ) -> list[TaskRow]:
        """Move up to ``limit`` ready tasks into the window of scheduler ``owner`` (state
        ``queued``, ``owner`` theirs), in one transaction; nothing if ``owner`` was taken
        over (:class:`~oomguard.errors.TakenOverError`)."""
        now = time.time()
        with self.transaction() as db:
            if owner is not None:
                self.leases.fence(db, owner)
            rows = db.execute(
                Q["take_ready"],
                {"job_id": job_id, "now": now, "grp_limit": grp_limit, "limit": limit},
            ).fetchall()
            if rows:
                claimed = {
                    r[0]
                    for r in db.execute(
                        Q["task_queued"],
                        {"owner": owner, "now": now, "ids": json.dumps([r[0] for r in rows])},
                    )
                }
                rows = [r for r in rows if r[0] in claimed]
        return self._with_params([TaskRow(*r) for r in rows])

    def read_ready(
        self, job_id: str, limit: int, grp_limit: int, held: Iterable[int] = ()
    ) -> list[TaskRow]:
        """:meth:`take_ready` for a scheduler that owns the store alone (not a replica):
        up to ``limit`` ready tasks that are not among ``held`` (its window's), read and
        left ready: nothing to write, as no other scheduler takes tasks from this store
        while it lives, and one that dies leaves nothing queued to recover."""
        rows = self.db.execute(
            Q["read_ready"],
            {
                "job_id": job_id,
                "now": time.time(),
                "grp_limit": grp_limit,
                "limit": limit,
                "held": json.dumps(list(held)),
            },
        ).fetchall()
        return self._with_params([TaskRow(*r) for r in rows])

    def _with_params(self, tasks: list[TaskRow]) -> list[TaskRow]:
        """``tasks`` with their large params read from their blobs."""
        for task in tasks:
            if task.params_ref is not None:
                try:
                    task.params = self.blobs.params_of(None, task.params_ref)
                except BlobMissingError as err:
                    task.input_error = f"input {err}"
        return tasks

    def next_not_before(self, job_id: str) -> float | None:
        row = self.db.execute(Q["next_not_before"], (job_id,)).fetchone()
        return None if row[0] is None else float(row[0])

    def group_inputs(self, job_id: str, grp: int) -> tuple[str | None, list[bytes]]:
        """The params of a group and its replicates' pickled results, by replicate."""
        params_row = self.db.execute(
            Q["group_params"],
            (job_id, grp),
        ).fetchone()
        values = []
        for value, ref in self.db.execute(
            Q["group_values"],
            (job_id, grp),
        ):
            values.append(self.blobs.get(ref) if ref else value)
        return (self.blobs.params_of(*params_row) if params_row else None), values

    def apply(
        self,
        writes: Iterable[Write],
        estimates: Sequence[KeyEstimate] = (),
        scheduler_id: str | None = None,
    ) -> int:
        """Commit queued writes (:class:`~oomguard.store.writes.PendingWrites`), and the
        memory keys' ``estimates`` they taught (rows as :meth:`put_estimates` takes), in
        one transaction.

        Consecutive writes of the same query run as one ``executemany``. A result
        already stored for its task is discarded (exactly-once results); the number of
        discarded duplicates is returned. Text that UTF-8 cannot encode (lone surrogates
        in a task's error message) is stored escaped.

        Fencing: with ``scheduler_id`` (the scheduler whose writes these are), nothing
        commits if it was taken over, or if an attempt the writes end is no longer running
        under it: the transaction is rolled back, the refused writes counted
        (``fenced_writes``) and :class:`~oomguard.errors.TakenOverError` raised.
        """
        writes = list(writes)
        try:
            try:
                return self._apply(writes, estimates, scheduler_id, safe=False)
            except UnicodeEncodeError:
                return self._apply(writes, estimates, scheduler_id, safe=True)
        except TakenOverError:
            with self.transaction() as db:
                db.execute(Q["count_fenced"], (len(writes),))
            raise

    def _apply(
        self,
        writes: list[Write],
        estimates: Sequence[KeyEstimate],
        scheduler_id: str | None,
        safe: bool,
    ) -> int:
        # One executemany per run of one query, phase by phase (see writes.PHASES); the sort
        # is stable, so a phase's writes keep their order (its lock writes, each task's).
        duplicates = 0
        with self.transaction() as db:
            if scheduler_id is not None:
                ends = [(w.query, w.parameters()) for w in writes if w.query == "end_attempt"]
                self._fence(db, scheduler_id, ends)
            for name, same in groupby(sorted(writes, key=_PHASE), key=_QUERY):
                run = list(same)
                if name == "result":
                    duplicates += self._store_results(db, [_params(w, safe) for w in run])
                    continue
                if name == "insert_attempt":
                    # Claims, the usual case, bind none of the columns of an ending.
                    claims: list[Write] = []
                    ended: list[Write] = []
                    for write in run:
                        row = write.params
                        fresh = isinstance(row, AttemptRow) and row.started_only()
                        (claims if fresh else ended).append(write)
                    if claims:
                        _execute_many(db, "insert_claim", claims, safe)
                    run = ended
                if run:
                    _execute_many(db, name, run, safe)
            if estimates:
                key_estimates.put(db, estimates)
            if duplicates:
                db.execute(
                    Q["count_duplicate_results"],
                    (duplicates,),
                )
        return duplicates

    def _fence(self, db: Db, scheduler_id: str, ends: list[tuple[str, SqlParams]]) -> None:
        """Refuse (raise, rolling back) the writes of a scheduler taken over, or that end an
        attempt no longer running under it."""
        self.leases.fence(db, scheduler_id)
        if not ends:
            return
        (stale,) = db.execute(
            Q["stale_attempts_among"],
            {"ids": json.dumps([p["id"] for _, p in ends]), "owner": scheduler_id},
        ).fetchone()
        if stale:
            raise TakenOverError(
                f"scheduler {scheduler_id}: {stale} of the attempts it ends are no longer "
                "its own (taken over): it records nothing more",
                scheduler_id=scheduler_id,
                by=None,
            )

    def _store_results(self, db: Db, results: list[SqlParams]) -> int:
        """Store results once per task (a late duplicate is discarded and counted), succeed
        their tasks and release their dependants; return the number of duplicates."""
        ids = [params["task_id"] for params in results]
        stored: set[int] = {
            r[0]
            for r in db.execute(
                Q["stored_results_among"],
                (json.dumps(ids),),
            )
        }
        fresh: list[SqlParams] = []
        for params in results:
            task_id = int(params["task_id"] or 0)
            if task_id in stored:
                continue
            stored.add(task_id)
            value = params["value"]
            assert value is None or isinstance(value, bytes)  # a result write's pickle
            row = dict(params, value_ref=None, size=None if value is None else len(value))
            if value is not None and len(value) > BLOB_THRESHOLD:
                row["value_ref"] = self.blobs.put(value)
                row["value"] = None
            fresh.append(row)
        if fresh:
            for name in ("insert_result", "task_succeeded"):
                query = POSITIONAL[name]
                db.executemany(query.sql, map(query.values, fresh))
            # Asked once per job of the group, not once per result.
            jobs = {str(r["job_id"]) for r in fresh}
            aggregated = {job for job in jobs if self._aggregates(job)}
            if aggregated:
                released = [r for r in fresh if r["kind"] == "task" and r["job_id"] in aggregated]
                query = POSITIONAL["release_dependent"]
                db.executemany(query.sql, map(query.values, released))
        return len(results) - len(fresh)

    def _aggregates(self, job_id: str) -> bool:
        """Whether ``job_id`` has aggregations (whose count of replicates to wait for a
        result releases); a job's aggregation never changes, so it is asked once."""
        known = self._has_aggregates.get(job_id)
        if known is None:
            if len(self._has_aggregates) >= AGGREGATES_KNOWN:
                self._has_aggregates.clear()  # bounded however many jobs a server sees
            row = self.db.execute(Q["job_aggregation"], (job_id,)).fetchone()
            # An unknown job (forgotten meanwhile): release, as before, to be safe.
            known = self._has_aggregates[job_id] = row is None or row[0] is not None
        return known

    # -- estimates (store/estimates.py) -----------------------------------------------

    def estimates(self) -> dict[str, tuple[int, int, int]]:
        """``{memory_key: (estimate, largest peak, samples)}``."""
        return key_estimates.summary(self.db)

    def estimate_rows(self) -> dict[str, KeyEstimate]:
        """Everything each memory key is known to need (``scheduler/admission.py``)."""
        return key_estimates.rows(self.db)

    def put_estimates(self, rows: Iterable[KeyEstimate]) -> None:
        """Upsert what memory keys are known to need."""
        with self.transaction() as db:
            key_estimates.put(db, rows)

    def task_place(self, task_id: int) -> tuple[str, int, str] | None:
        """``(job_id, group, kind)`` of a task, or None if there is no such task."""
        row = self.db.execute(Q["task_place"], (task_id,)).fetchone()
        return None if row is None else (str(row[0]), int(row[1]), str(row[2]))

    def task_state(self, task_id: int) -> str | None:
        row = self.db.execute(Q["task_state"], (task_id,)).fetchone()
        return None if row is None else str(row[0])

    def cancelled_among(self, task_ids: Sequence[int]) -> set[int]:
        if not task_ids:
            return set()
        return {
            int(r[0])
            for r in self.db.execute(
                Q["cancelled_among"],
                (json.dumps(list(task_ids)),),
            )
        }


_PHASE = attrgetter("phase")
_QUERY = attrgetter("query")
_BOUND = attrgetter("bound")


def _params(write: Write, safe: bool) -> SqlParams:
    """``write``'s parameters; ``safe``: every string made encodable."""
    return safe_params(write.parameters()) if safe else write.parameters()


def _execute_many(db: Db, name: str, writes: list[Write], safe: bool) -> None:
    """Run the query ``name`` once for each of ``writes`` (one ``executemany``)."""
    query = POSITIONAL[name]
    if safe:
        db.executemany(query.sql, [query.values(safe_params(w.parameters())) for w in writes])
    else:
        # Each row laid out in C (itemgetters over map): no Python bytecode per write.
        db.executemany(query.sql, map(query.values, map(_BOUND, writes)))


__all__ = ["SqliteStore", "TaskRow"]
