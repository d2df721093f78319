"""Schedulers and their leases: who owns a store, and what a dead owner left running.

Composed into :class:`~oomguard.store.sqlite.SqliteStore` as ``store.leases``. A scheduler
registers (becoming the store's owner), heartbeats, and unregisters when it stops. The next
one to register ends what a dead one left running as ``lost`` and makes its tasks ready
again; a task lost more than ``lost_retries`` times fails as ``lost`` instead, so a task
that kills its scheduler cannot make it crash-loop (docs/ARCHITECTURE.md, "The failure
path").
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from oomguard.errors import StoreBusyError
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


def _process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


@translated
class Leases:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def register(self, scheduler_id: str, lease_ttl: float, lost_retries: int = 5) -> Recovery:
        """Become the store's scheduler; end what a dead scheduler left running.

        A scheduler is alive while it heartbeats within ``lease_ttl`` seconds; on this
        host a scheduler whose process (pid and start time) is gone is dead at once.
        A task whose attempts were lost more than ``lost_retries`` times fails as
        ``lost``: a task that kills the scheduler itself cannot make it crash-loop.
        """
        now = time.time()
        me = psutil.Process()
        host = socket.gethostname()
        with self._conn.transaction() as db:
            for sid, s_host, pid, start_time, heartbeat in db.execute(
                Q["live_schedulers"],
                (scheduler_id,),
            ).fetchall():
                alive = heartbeat > now - lease_ttl
                if alive and s_host == host:
                    started = _process_start_time(pid)
                    alive = started is not None and abs(started - start_time) < 1.0
                if alive:
                    raise StoreBusyError(
                        f"store {self._conn.where!r} is in use by a live scheduler "
                        f"(pid {pid} on {s_host}); stop it or wait {lease_ttl:.0f}s after it died",
                        pid=pid,
                        host=s_host,
                    )
                db.execute(Q["scheduler_stopped"], (now, sid))
            db.execute(
                Q["register_scheduler"],
                (scheduler_id, host, me.pid, me.create_time(), now, now),
            )
            return self._recover(db, scheduler_id, now, lost_retries)

    def _recover(self, db: Db, scheduler_id: str, now: float, lost_retries: int) -> Recovery:
        lost = db.execute(
            Q["orphaned_attempts"],
            (scheduler_id,),
        ).fetchall()
        evidence = json.dumps({"reason": "lease expired: the scheduler that ran it died"})
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

    def requeue_tasks(self, task_ids: Sequence[int]) -> None:
        """A stopping scheduler hands its tasks back: ready again, its locks released."""
        with self._conn.transaction() as db:
            db.executemany(
                Q["requeue_task"],
                [(i,) for i in task_ids],
            )
            db.execute(Q["release_all_locks"])

    def heartbeat(self, scheduler_id: str) -> None:
        with self._conn.transaction() as db:
            db.execute(Q["heartbeat"], (time.time(), scheduler_id))

    def unregister(self, scheduler_id: str) -> None:
        with self._conn.transaction() as db:
            db.execute(Q["scheduler_stopped"], (time.time(), scheduler_id))
