"""Schedulers and their leases: who uses a store, and what a dead one left running.

Composed into :class:`~oomguard.store.sqlite.SqliteStore` as ``store.leases``. A scheduler
registers, heartbeats, and unregisters when it stops. It registers either as the store's
exclusive owner (alone: refused while any other scheduler lives) or as a *replica*, which
shares the store with other live replicas (refused while an exclusive one lives).

An exclusive scheduler, as it registers, ends what dead schedulers left running as ``lost``
and makes every queued or running task ready again. A replica takes over each dead
scheduler by itself (:meth:`Leases.take_over_dead`, at registering and at each of its
heartbeats), in one transaction per dead scheduler: marks it taken over, ends *its* running
attempts ``lost``, makes the tasks *it* owned ready, releases *its* locks. A scheduler taken
over writes nothing more (:meth:`Leases.fence`, read first in each of its write
transactions). A task lost more than ``lost_retries`` times fails as ``lost`` instead, so
a task that kills its scheduler cannot make it crash-loop (docs/ARCHITECTURE.md, "The
failure path").
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from oomguard.errors import StoreBusyError, TakenOverError
from oomguard.store.db import Db
from oomguard.store.failures import translated
from oomguard.store.queries import Q

if TYPE_CHECKING:
    from oomguard.store.connection import Connection


@dataclass
class Recovery:
    """What opening the store as scheduler found left over from a dead scheduler."""

    lost_attempts: int
    requeued_tasks: int
    released_locks: int
    #: tasks lost more often than ``lost_retries``: failed as ``lost``
    failed_lost: int = 0


#: attempt ids a replica reserves at a time (replicas number attempts from disjoint blocks)
ATTEMPT_ID_BLOCK = 10_000


@dataclass(frozen=True)
class TakeOver:
    """A dead scheduler a live replica took over."""

    scheduler_id: str
    #: why it was found dead (its heartbeat's age, or its process gone)
    reason: str
    recovery: Recovery


def _process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


def _add(a: Recovery, b: Recovery) -> Recovery:
    return Recovery(
        lost_attempts=a.lost_attempts + b.lost_attempts,
        requeued_tasks=a.requeued_tasks + b.requeued_tasks,
        released_locks=a.released_locks + b.released_locks,
        failed_lost=a.failed_lost + b.failed_lost,
    )


@translated
class Leases:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def register(
        self,
        scheduler_id: str,
        lease_ttl: float,
        lost_retries: int = 5,
        *,
        replica: bool = False,
    ) -> Recovery:
        """Register scheduler ``scheduler_id``; end what dead schedulers left running.

        A scheduler is alive while it heartbeats within ``lease_ttl`` seconds; on this
        host a scheduler whose process (pid and start time) is gone is dead at once.
        Exclusive (``replica`` false): refused (:class:`StoreBusyError`) while any other
        scheduler lives. A ``replica``: refused while an exclusive scheduler lives; it
        coexists with live replicas and takes over the dead ones (:meth:`take_over_dead`).
        A task whose attempts were lost more than ``lost_retries`` times fails as ``lost``.
        """
        now = time.time()
        me = psutil.Process()
        host = socket.gethostname()
        with self._conn.transaction() as db:
            db.execute(Q["lock_leases"])  # PostgreSQL: one registering or taking over at a time
            live_replicas = 0
            dead: list[tuple[str, str]] = []
            for sid, s_host, pid, _start, heartbeat, other_replica in self._others(
                db, scheduler_id
            ):
                why = self._dead(s_host, pid, _start, heartbeat, now, lease_ttl, host)
                if why is None and (not replica or not other_replica):
                    kind = "replica" if other_replica else "scheduler"
                    raise StoreBusyError(
                        f"store {self._conn.where!r} is in use by a live {kind} "
                        f"(pid {pid} on {s_host}); stop it or wait {lease_ttl:.0f}s after it "
                        "died" + (" (a replica shares a store only with replicas)" * replica),
                        pid=pid,
                        host=s_host,
                    )
                if why is None:
                    live_replicas += 1
                else:
                    dead.append((sid, why))
            db.execute(
                Q["register_scheduler"],
                (scheduler_id, host, me.pid, me.create_time(), now, now, int(replica)),
            )
            if not replica or not live_replicas:
                # Alone: whatever is running or queued is a dead scheduler's (as ever).
                for sid, _ in dead:
                    db.execute(Q["scheduler_stopped"], (now, sid))
                    db.execute(Q["outbox_let_go"], (sid,))
                return self._recover(db, scheduler_id, now, lost_retries)
            total = Recovery(0, 0, 0, 0)
            for sid, why in dead:
                got = self._take_over(db, sid, scheduler_id, why, now, lost_retries)
                if got is not None:
                    total = _add(total, got)
            return total

    def _others(self, db: Db, scheduler_id: str) -> list[tuple[str, str, int, float, float, int]]:
        return [tuple(r) for r in db.execute(Q["live_schedulers"], (scheduler_id,)).fetchall()]

    @staticmethod
    def _dead(
        host: str,
        pid: int,
        start_time: float,
        heartbeat: float,
        now: float,
        lease_ttl: float,
        my_host: str,
    ) -> str | None:
        """Why a scheduler is dead (None: alive). Never on elapsed time alone while its
        heartbeat is fresh: only a stale heartbeat, or its process gone on this host."""
        if heartbeat <= now - lease_ttl:
            return f"its heartbeat is {now - heartbeat:.1f}s old (lease {lease_ttl:g}s)"
        if host == my_host:
            started = _process_start_time(pid)
            if started is None or abs(started - start_time) >= 1.0:
                return f"its process (pid {pid} on {host}) is gone"
        return None

    def take_over_dead(
        self, scheduler_id: str, lease_ttl: float, lost_retries: int = 5
    ) -> list[TakeOver]:
        """Replica ``scheduler_id`` takes over every dead scheduler, each in one
        transaction: it is marked taken over (its writes are refused from then on), its
        running attempts end ``lost`` with evidence naming it, the tasks it owned are ready
        again (no owner) and its locks are released. Raises :class:`TakenOverError` if
        ``scheduler_id`` was itself taken over (it must not judge others)."""
        now = time.time()
        host = socket.gethostname()
        found: list[tuple[str, str]] = []
        for sid, s_host, pid, start, heartbeat, _replica in self._others(self.db, scheduler_id):
            why = self._dead(s_host, pid, start, heartbeat, now, lease_ttl, host)
            if why is not None:
                found.append((sid, why))
        taken: list[TakeOver] = []
        for sid, _why in found:
            with self._conn.transaction() as db:
                db.execute(Q["lock_leases"])  # PostgreSQL: one taking over at a time
                self._fence(db, scheduler_id)
                # Read again inside the transaction: it may have heartbeat since.
                row = db.execute(Q["scheduler_row"], (sid,)).fetchone()
                if row is None:
                    continue
                s_host, pid, start, heartbeat = row
                why_now = self._dead(s_host, pid, start, heartbeat, time.time(), lease_ttl, host)
                if why_now is None:
                    continue
                got = self._take_over(db, sid, scheduler_id, why_now, now, lost_retries)
                if got is not None:
                    taken.append(TakeOver(sid, why_now, got))
                    self._conn.tasks_ready(db)  # every live replica may take them
        return taken

    def _take_over(
        self,
        db: Db,
        dead_id: str,
        by: str,
        why: str,
        now: float,
        lost_retries: int,
    ) -> Recovery | None:
        marked = db.execute(
            Q["take_over_scheduler"], {"id": dead_id, "by": by, "now": now}
        ).rowcount
        if not marked:
            return None  # stopped, or another replica took it over first
        lost = db.execute(Q["scheduler_attempts_running"], (dead_id,)).fetchall()
        evidence = json.dumps(
            {
                "reason": f"lease expired: the scheduler that ran it ({dead_id}) died: {why}",
                "scheduler_id": dead_id,
                "taken_over_by": by,
            }
        )
        self._end_lost(db, lost, evidence, now)
        failed = 0
        for task_id in sorted({task_id for _, task_id, _ in lost}):
            failed += self._fail_if_lost_too_often(db, task_id, now, lost_retries)
        released = db.execute(Q["release_scheduler_locks"], {"owner": dead_id}).rowcount
        db.execute(Q["outbox_let_go"], (dead_id,))  # its webhooks: delivered by another
        requeued = db.execute(Q["requeue_owned_tasks"], {"now": now, "owner": dead_id}).rowcount
        db.execute(
            Q["insert_event"],
            {
                "ts": now,
                "job_id": None,
                "task_id": None,
                "kind": "scheduler_taken_over",
                "data": json.dumps(
                    {"scheduler_id": dead_id, "by": by, "reason": why, "lost": len(lost)}
                ),
            },
        )
        return Recovery(
            lost_attempts=len(lost),
            requeued_tasks=requeued,
            released_locks=released,
            failed_lost=failed,
        )

    @property
    def db(self) -> Db:
        return self._conn.db

    def fence(self, db: Db, scheduler_id: str) -> None:
        """Raise :class:`TakenOverError` if ``scheduler_id`` was taken over; called first
        in each of its write transactions, so nothing of it commits after its takeover."""
        self._fence(db, scheduler_id)

    @staticmethod
    def _fence(db: Db, scheduler_id: str) -> None:
        row = db.execute(Q["scheduler_fence"], (scheduler_id,)).fetchone()
        if row is not None:
            raise TakenOverError(
                f"scheduler {scheduler_id} was taken over by {row[0]} (its lease expired): "
                "it records nothing more",
                scheduler_id=scheduler_id,
                by=str(row[0]),
            )

    def reserve_attempt_ids(self, n: int = ATTEMPT_ID_BLOCK) -> int:
        """Reserve ``n`` attempt ids no other scheduler will use; return the first."""
        with self._conn.transaction() as db:
            (floor,) = db.execute(Q["next_attempt_id"]).fetchone()
            (last,) = db.execute(
                Q["reserve_ids"], {"name": "attempt_ids", "floor": floor, "n": n}
            ).fetchone()
        return int(last) - n + 1

    def _recover(self, db: Db, scheduler_id: str, now: float, lost_retries: int) -> Recovery:
        lost = db.execute(
            Q["orphaned_attempts"],
            (scheduler_id,),
        ).fetchall()
        evidence = json.dumps({"reason": "lease expired: the scheduler that ran it died"})
        self._end_lost(db, lost, evidence, now)
        failed = 0
        for task_id in sorted({task_id for _, task_id, _ in lost}):
            failed += self._fail_if_lost_too_often(db, task_id, now, lost_retries)
        released = db.execute(
            Q["release_orphaned_locks"],
            (scheduler_id,),
        ).rowcount
        # A lost attempt is not the task's fault: it is retried without using a retry.
        requeued = db.execute(
            Q["requeue_orphaned_tasks"],
            (now,),
        ).rowcount
        return Recovery(
            lost_attempts=len(lost),
            requeued_tasks=requeued,
            released_locks=released,
            failed_lost=failed,
        )

    @staticmethod
    def _end_lost(db: Db, lost: list[tuple[int, int, str]], evidence: str, now: float) -> None:
        for attempt_id, task_id, job_id in lost:
            db.execute(
                Q["attempt_lost"],
                (now, evidence, attempt_id),
            )
            db.execute(
                Q["insert_event"],
                {
                    "ts": now,
                    "job_id": job_id,
                    "task_id": task_id,
                    "kind": "attempt_lost",
                    "data": json.dumps({"attempt_id": attempt_id}),
                },
            )

    def _fail_if_lost_too_often(self, db: Db, task_id: int, now: float, lost_retries: int) -> int:
        (times,) = db.execute(
            Q["lost_attempts"],
            (task_id,),
        ).fetchone()
        if times <= lost_retries:
            return 0
        error = (
            f"lost {times} times: each attempt was still running when its scheduler died "
            f"(at most {lost_retries} retries after a lost attempt; a task that kills its "
            "scheduler, or a host that keeps dying, fails here instead of crash-looping)"
        )
        row = db.execute(
            Q["task_lost_too_often"],
            (error, now, task_id),
        ).fetchone()
        if row is None:
            return 0
        job_id, grp, kind = row
        if kind == "task":
            db.execute(
                Q["fail_dependent"],
                {
                    "job_id": job_id,
                    "grp": grp,
                    "now": now,
                    "error": f"replicate task {task_id} failed (lost)",
                },
            )
        db.execute(
            Q["insert_event"],
            {
                "ts": now,
                "job_id": job_id,
                "task_id": task_id,
                "kind": "attempt_failed",
                "data": json.dumps({"class": "lost", "retry": False, "final": "lost"}),
            },
        )
        return 1

    def requeue_tasks(self, task_ids: Sequence[int], scheduler_id: str) -> None:
        """A stopping scheduler hands its tasks back: ready again (no owner), the locks of
        its attempts released. Nothing, if it was taken over (they are not its any more)."""
        with self._conn.transaction() as db:
            self._fence(db, scheduler_id)
            db.executemany(
                Q["requeue_task"],
                [(i,) for i in task_ids],
            )
            db.execute(Q["release_scheduler_locks"], {"owner": scheduler_id})
            if task_ids:
                self._conn.tasks_ready(db)  # the other replicas take them now

    def heartbeat(self, scheduler_id: str) -> None:
        """Renew ``scheduler_id``'s lease; :class:`TakenOverError` if it was taken over."""
        with self._conn.transaction() as db:
            if not db.execute(Q["heartbeat"], (time.time(), scheduler_id)).rowcount:
                self._fence(db, scheduler_id)

    def take_lock(self, key: str, attempt_id: int, task_id: int, scheduler_id: str) -> bool:
        """Replica ``scheduler_id`` takes lock ``key`` for its attempt ``attempt_id`` (not
        started yet): whether it got it (False: another holds it). Replicas take locks here,
        each in a transaction of its own, before the attempt starts; the attempt's end
        releases it as an exclusive scheduler's (``release_lock``), a takeover with the
        replica's other locks."""
        with self._conn.transaction() as db:
            self._fence(db, scheduler_id)
            params = {"key": key, "attempt_id": attempt_id, "task_id": task_id}
            return bool(db.execute(Q["take_lock"], {**params, "owner": scheduler_id}).rowcount)

    def drop_lock(self, key: str, attempt_id: int, scheduler_id: str) -> None:
        """Give back lock ``key`` taken for attempt ``attempt_id``, which did not start."""
        with self._conn.transaction() as db:
            db.execute(
                Q["drop_lock"], {"key": key, "attempt_id": attempt_id, "owner": scheduler_id}
            )

    def claim_job_notice(self, job_id: str, state: str) -> bool:
        """Whether this scheduler tells that job ``job_id`` is now ``state``: the first to
        claim a change tells it (replicas each see every job change)."""
        with self._conn.transaction() as db:
            return bool(
                db.execute(Q["claim_job_notice"], {"job_id": job_id, "state": state}).rowcount
            )

    def unregister(self, scheduler_id: str) -> None:
        with self._conn.transaction() as db:
            db.execute(Q["scheduler_stopped"], (time.time(), scheduler_id))
            db.execute(Q["outbox_let_go"], (scheduler_id,))
