"""A connection to a PostgreSQL store: one psycopg connection (one per store object, as
SQLite's: a thread uses its own store, see ``store/per_thread.py``) behind the shape the
facets use (:class:`~oomguard.store.db.Db`). Statements arrive as SQLite text and run in
PostgreSQL's dialect (:mod:`oomguard.store.postgres.dialect`); psycopg's errors leave as
oomguard's store errors here, at the boundary.

Autocommit: a statement outside a transaction commits alone; a write transaction
(:class:`PgTransaction`) is an explicit ``BEGIN ... COMMIT`` sent in psycopg's pipeline
mode: its statements go to the server without waiting for each one's answer, and the
client waits only where it needs one (a statement's rows or row count, see
:class:`PgCursor`) and for the ``COMMIT``. A grouped commit of many attempts' ends is so
two round trips (the writes up to the results' check, then the rest and the ``COMMIT``),
not one or more per statement. An ``execute`` binds its parameters on the client
(``ClientCursor``): a ``NULL`` needs no type, as in SQLite. An ``executemany`` (the hot
path's writes, whose parameters the columns type) binds them on the server, the statement
prepared once."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from oomguard.errors import StoreError, StoreUnavailable
from oomguard.store.connection import Connection, Transaction
from oomguard.store.db import Db, Params
from oomguard.store.location import shown
from oomguard.store.postgres.batch import BATCHES
from oomguard.store.postgres.dialect import BY_TEXT, OWN, Statement, translate
from oomguard.store.queries import Q

if TYPE_CHECKING:
    import psycopg

#: one writer lock per database in this process, as SQLite's per file
_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()
#: texts translated on the fly (not named statements), bounded
_AD_HOC: dict[str, Statement] = {}
_AD_HOC_MAX = 1024
_T = TypeVar("_T")
#: a statement whose text and bytes values weigh more is sent outside the pipeline
PIPELINED_MAX = 256 * 1024


def _weight(values: Iterable[Any]) -> int:
    return sum(len(v) for v in values if isinstance(v, str | bytes))


def redacted(url: str) -> str:
    """``url`` without its user and password, for messages: ``postgresql://host/db``."""
    return shown(url)


def _statement(sql: str) -> Statement:
    found = BY_TEXT.get(sql) or _AD_HOC.get(sql)
    if found is None:
        if len(_AD_HOC) >= _AD_HOC_MAX:
            _AD_HOC.clear()
        found = _AD_HOC[sql] = Statement(translate(sql))
    return found


def _bind(statement: Statement, parameters: Params) -> Params:
    if statement.names is not None and not isinstance(parameters, Mapping):
        return dict(zip(statement.names, parameters, strict=True))
    return parameters


def translate_error(err: Exception, where: str) -> StoreError:
    """oomguard's error for a psycopg error: the database unreachable or a connection lost
    is :class:`StoreUnavailable` (as SQLite's OperationalError is), a refused statement a
    plain :class:`StoreError`."""
    import psycopg

    if isinstance(err, psycopg.OperationalError | psycopg.errors.ReadOnlySqlTransaction):
        return StoreUnavailable(f"the store {where} cannot be used now: {err}", reason=str(err))
    return StoreError(f"the store refused a statement: {err}", reason=str(err))


class PgCursor:
    """A statement's rows; a statement without rows iterates as empty (SQLite's way).

    Sent in a pipeline (inside a :class:`PgTransaction`), its answer is not read yet: the
    first look at its rows or row count syncs the pipeline (one round trip for every
    statement sent so far); a cursor nobody reads costs no wait."""

    def __init__(self, cursor: psycopg.Cursor[Any], db: PgDb) -> None:
        self._cursor = cursor
        self._db = db
        #: the pipeline sync that brings this statement's answer; None: it is here
        self._sync = db.syncs + 1 if db.pipelined else None

    def _answered(self) -> psycopg.Cursor[Any]:
        if self._sync is not None:
            if self._db.syncs < self._sync:
                self._db.sync()
            self._sync = None
        return self._cursor

    @property
    def rowcount(self) -> int:
        return self._answered().rowcount

    @property
    def lastrowid(self) -> int | None:
        """The id an ``INSERT ... RETURNING id`` returned (the override of an insert
        whose id is read returns it)."""
        row = self.fetchone()
        return None if row is None else int(row[0])

    def _rows(self) -> psycopg.Cursor[Any] | None:
        cursor = self._answered()
        return cursor if cursor.description is not None else None

    def fetchone(self) -> Any:
        cursor = self._rows()
        return None if cursor is None else self._db.guarded(cursor.fetchone)

    def fetchall(self) -> list[Any]:
        cursor = self._rows()
        return [] if cursor is None else self._db.guarded(cursor.fetchall)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgDb:
    """The facets' ``db`` on PostgreSQL (:class:`~oomguard.store.db.Db`)."""

    def __init__(self, conn: psycopg.Connection[Any], where: str) -> None:
        self._conn = conn
        self.where = where
        #: the pipeline of the transaction in progress (:meth:`begin`), and what leaves
        #: it; None outside one
        self._pipeline: psycopg.Pipeline | None = None
        self._leaving: contextlib.AbstractContextManager[psycopg.Pipeline] | None = None
        #: how many times the pipeline was synced (a cursor waits for the sync after it)
        self.syncs = 0

    @property
    def pipelined(self) -> bool:
        return self._pipeline is not None

    def guarded(self, call: Callable[[], _T]) -> _T:
        """``call()`` with psycopg's errors translated (this store's boundary)."""
        import psycopg

        try:
            return call()
        except psycopg.Error as err:
            raise translate_error(err, self.where) from err

    def execute(self, sql: str, parameters: Params = (), /) -> PgCursor:
        statement = _statement(sql)

        def run() -> PgCursor:
            cursor = self._conn.cursor()
            cursor.execute(statement.sql, _bind(statement, parameters))
            return PgCursor(cursor, self)

        values = parameters.values() if isinstance(parameters, Mapping) else parameters
        return self._alone(run) if _weight(values) > PIPELINED_MAX else self.guarded(run)

    def executemany(self, sql: str, parameters: Iterable[Params], /) -> PgCursor:
        import psycopg

        statement = _statement(sql)

        rows = [_bind(statement, p) for p in parameters]
        batch = BATCHES.get(sql) if len(rows) > 1 else None
        columns = None if batch is None else batch.columns(rows)

        def run() -> PgCursor:
            # Bound on the server: the hot path's writes, parsed and planned once
            # (prepared), not once per row as a literal query. Their parameters are typed
            # by the columns they go to, as a NULL must be. A write with a batch form runs
            # as one statement of arrays (store/postgres/batch.py); the others row by row.
            # In a transaction's pipeline, either rides it: no wait for the answers.
            cursor: psycopg.Cursor[Any] = psycopg.Cursor(self._conn)
            if batch is not None and columns is not None:
                cursor.execute(batch.sql, columns)
            else:
                cursor.executemany(statement.sql, rows)
            return PgCursor(cursor, self)

        if columns is not None:
            arrays = columns.values() if isinstance(columns, Mapping) else columns
            if _weight(arrays) > PIPELINED_MAX:
                return self._alone(run)
        return self.guarded(run)

    def _alone(self, run: Callable[[], _T]) -> _T:
        """``run()`` outside the transaction's pipeline (its answers read first), then
        back in it: a statement carrying large values (a blob, a big submission) is sent
        alone and waited for. In pipeline mode such a statement could leave the client
        waiting forever at the next sync (seen once in a few runs of the contract tests
        with a 1 MiB blob)."""
        if self._pipeline is None:
            return self.guarded(run)
        self._leave(failed=False)
        try:
            return self.guarded(run)
        finally:
            leaving = self._conn.pipeline()
            self._pipeline = self.guarded(leaving.__enter__)
            self._leaving = leaving

    def sync(self) -> None:
        """Wait for the answers of every statement sent in the pipeline so far."""
        assert self._pipeline is not None  # a cursor syncs only while pipelined
        self.syncs += 1
        self.guarded(self._pipeline.sync)

    def begin(self) -> None:
        """Enter the pipeline and send ``BEGIN`` (its answer is not waited for)."""
        leaving = self._conn.pipeline()
        self._pipeline = self.guarded(leaving.__enter__)
        self._leaving = leaving
        try:
            self.execute(Q["begin_immediate"])
        except BaseException:
            self._leave(failed=True)
            raise

    def commit(self) -> None:
        """Send ``COMMIT`` and wait for it (and for every statement before it): durable
        when this returns. A statement that failed in the pipeline raises here, its
        transaction rolled back."""
        try:
            self.execute(Q["commit"])
            self._leave(failed=False)
        except BaseException:
            self._leave(failed=True)
            self._rollback()
            raise

    def rollback(self) -> None:
        """Leave the pipeline (its errors dropped: an error is already on its way) and
        roll the transaction back."""
        self._leave(failed=True)
        self._rollback()

    def _leave(self, *, failed: bool) -> None:
        leaving, self._leaving, self._pipeline = self._leaving, None, None
        if leaving is None:
            return
        self.syncs += 1
        if failed:
            with contextlib.suppress(Exception):
                leaving.__exit__(None, None, None)
        else:
            self.guarded(lambda: leaving.__exit__(None, None, None))

    def _rollback(self) -> None:
        from psycopg.pq import TransactionStatus

        status = self._conn.info.transaction_status
        if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            with contextlib.suppress(StoreError):
                self.execute(Q["rollback"])

    def close(self) -> None:
        self._conn.close()


class PgTransaction(Transaction):
    """``with PgTransaction(db, writer) as db:`` — the writer lock, then one transaction
    sent in a pipeline (:meth:`PgDb.begin`); committed and waited for, or rolled back on
    an exception; the lock released either way."""

    def __init__(self, db: PgDb, writer: threading.RLock) -> None:
        super().__init__(db, writer)
        self.pg = db

    def __enter__(self) -> Db:
        self.writer.acquire()
        try:
            self.pg.begin()
        except BaseException:
            self.writer.release()
            raise
        return self.pg

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                self.pg.commit()
            else:
                self.pg.rollback()
        finally:
            self.writer.release()


def _numeric_loader() -> type:
    """A loader of ``numeric`` (what ``SUM`` of a bigint is) as int or float, as SQLite
    gives it, not as ``Decimal``."""
    from psycopg.adapt import Loader

    class NumericLoader(Loader):
        def load(self, data: Any) -> int | float:
            text = bytes(data).decode()
            return int(text) if re.fullmatch(r"-?\d+", text) else float(text)

    return NumericLoader


def connect(url: str, *, readonly: bool, timeout: float = 30.0) -> PgDb:
    """A connection to the database at ``url`` (autocommit, client-side binding);
    ``readonly``: every transaction of the session is read-only."""
    try:
        import psycopg
    except ImportError as err:
        raise StoreError(
            "the PostgreSQL store needs psycopg: pip install 'oomguard[postgres]'",
            path=redacted(url),
        ) from err
    where = redacted(url)
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
            connect_timeout=max(1, int(timeout)),
            application_name="oomguard",
        )
    except psycopg.Error as err:
        raise StoreUnavailable(
            f"cannot connect to the store {where}: {_first_line(err)}", reason=_first_line(err)
        ) from None  # the driver's message may carry the URL
    conn.adapters.register_loader("numeric", _numeric_loader())
    db = PgDb(conn, where)
    # A session idle inside a transaction for 60 s is ended by the server and its locks
    # released: a replica frozen (SIGSTOP, a paused VM) between two statements of a
    # transaction that locked its scheduler's row would otherwise hold up its own takeover
    # until it is continued. A fixed 60 s, two default lease TTLs, not the lease TTL: the
    # store does not know it (the CLI and the HTTP threads open stores too), and a live
    # session never idles in a transaction for more than a round trip (the client sends a
    # transaction's statements in a pipeline, its COMMIT with them).
    db.execute(OWN["pg_idle_in_transaction_timeout"])
    if readonly:
        db.execute("SET default_transaction_read_only = on")
    return db


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


class PgConnection(Connection):
    """The :class:`~oomguard.store.connection.Connection` of a PostgreSQL store: ``path``
    is its redacted URL (for messages; nothing lies beside it)."""

    def __init__(self, db: PgDb, url: str) -> None:
        self.db: PgDb = db
        self.path = Path(redacted(url))
        self.where = redacted(url)
        with _WRITERS_GUARD:
            key = redacted(url)
            lock = _WRITERS.get(key)
            if lock is None:
                lock = _WRITERS[key] = threading.RLock()
        self.writer = lock

    def transaction(self) -> PgTransaction:
        """``with connection.transaction() as db:`` — one transaction, pipelined
        (:class:`PgTransaction`)."""
        return PgTransaction(self.db, self.writer)

    def tasks_ready(self, db: Db) -> None:
        """In transaction ``db``: tell the listening schedulers (every replica's
        :class:`~oomguard.store.postgres.listener.Listener`) that tasks became ready. A
        ``NOTIFY``: delivered when the transaction commits, never if it rolls back."""
        db.execute(OWN["pg_notify_tasks"])


__all__ = [
    "PgConnection",
    "PgCursor",
    "PgDb",
    "PgTransaction",
    "connect",
    "redacted",
    "translate_error",
]
