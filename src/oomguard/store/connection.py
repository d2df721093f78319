"""A connection to one store file: the SQLite connection, its pragmas, the writer lock and
write transactions (one ``BEGIN IMMEDIATE`` ... ``COMMIT`` each). Every facet of the store
(admin, leases, outbox, parts, samples, views, blobs) takes this, never the whole store;
see docs/ARCHITECTURE.md, "The store"."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from oomguard.store.db import Db
from oomguard.store.queries import Q

#: one writer lock per store file in this process (see :func:`writer_lock`)
_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()


def writer_lock(path: Path) -> threading.RLock:
    """The lock this process's connections to the store at ``path`` take around each write
    transaction. SQLite lets one writer in at a time; a connection that finds the store
    locked sleeps in its busy handler (1, 2, 5, 10, ... ms between tries), so the
    scheduler's commits stalled behind a submission's. Waiting here, it wakes as soon as
    the other transaction ends. Other processes still meet SQLite's busy timeout."""
    key = os.path.realpath(path)
    with _WRITERS_GUARD:
        lock = _WRITERS.get(key)
        if lock is None:
            lock = _WRITERS[key] = threading.RLock()
        return lock


class Transaction:
    """``with Transaction(db, writer) as db:`` — the writer lock, then one IMMEDIATE
    transaction; committed, or rolled back on an exception; the lock released either way."""

    def __init__(self, db: Db, writer: threading.RLock) -> None:
        self.db = db
        self.writer = writer

    def __enter__(self) -> Db:
        self.writer.acquire()
        try:
            self.db.execute(Q["begin_immediate"])
        except BaseException:
            self.writer.release()
            raise
        return self.db

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                self.db.execute(Q["commit"])
            else:
                self.db.execute(Q["rollback"])
        finally:
            self.writer.release()


class Connection:
    """The connection a store's facets share: ``db`` for reads, :meth:`transaction` for
    writes, and ``path`` for messages and the files beside the store."""

    def __init__(self, db: Db, path: Path) -> None:
        self.db = db
        self.path = path
        #: the store as messages name it (a PostgreSQL URL without its password)
        self.where = str(path)
        self.writer = writer_lock(path)

    def transaction(self) -> Transaction:
        """``with connection.transaction() as db:`` — one IMMEDIATE transaction.

        This process's connections to one store write one at a time (:func:`writer_lock`):
        a thread waiting for another's transaction wakes as it ends."""
        return Transaction(self.db, self.writer)

    def tasks_ready(self, db: Db) -> None:
        """In transaction ``db``: tasks became ready (added, retried, reopened, put back).
        SQLite tells nobody: other processes' schedulers find them when they next look
        (the loop's ``idle_wait``); PostgreSQL sends a ``NOTIFY`` with the commit."""

    def close(self) -> None:
        self.db.close()


__all__ = ["Connection", "Transaction", "writer_lock"]
