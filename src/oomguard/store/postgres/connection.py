"""A connection to a PostgreSQL store: one psycopg connection (one per store object, as
SQLite's: a thread uses its own store, see ``store/per_thread.py``) behind the shape the
facets use (:class:`~oomguard.store.db.Db`). Statements arrive as SQLite text and run in
PostgreSQL's dialect (:mod:`oomguard.store.postgres.dialect`); psycopg's errors leave as
oomguard's store errors here, at the boundary.

Autocommit: a statement outside a transaction commits alone; the write transactions are
the connection's explicit ``BEGIN ... COMMIT`` (:class:`~oomguard.store.connection.Transaction`).
An ``execute`` binds its parameters on the client (``ClientCursor``): a ``NULL`` needs no
type, as in SQLite. An ``executemany`` (the hot path's writes, whose parameters the
columns type) binds them on the server, in one pipeline, the statement prepared once."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oomguard.errors import StoreError, StoreUnavailable
from oomguard.store.connection import Connection
from oomguard.store.db import Params
from oomguard.store.location import shown
from oomguard.store.postgres.dialect import BY_TEXT, Statement, translate

if TYPE_CHECKING:
    import psycopg

#: one writer lock per database in this process, as SQLite's per file
_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()
#: texts translated on the fly (not named statements), bounded
_AD_HOC: dict[str, Statement] = {}
_AD_HOC_MAX = 1024


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
    """A statement's rows; a statement without rows iterates as empty (SQLite's way)."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor
        self._rows = cursor.description is not None

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        """The id an ``INSERT ... RETURNING id`` returned (the override of an insert
        whose id is read returns it)."""
        row = self.fetchone()
        return None if row is None else int(row[0])

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall() if self._rows else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor) if self._rows else iter(())


class PgDb:
    """The facets' ``db`` on PostgreSQL (:class:`~oomguard.store.db.Db`)."""

    def __init__(self, conn: psycopg.Connection[Any], where: str) -> None:
        self._conn = conn
        self.where = where

    def execute(self, sql: str, parameters: Params = (), /) -> PgCursor:
        import psycopg

        statement = _statement(sql)
        try:
            cursor = self._conn.cursor()
            cursor.execute(statement.sql, _bind(statement, parameters))
            return PgCursor(cursor)
        except psycopg.Error as err:
            raise translate_error(err, self.where) from err

    def executemany(self, sql: str, parameters: Iterable[Params], /) -> PgCursor:
        import psycopg

        statement = _statement(sql)
        try:
            # Bound on the server: the hot path's writes, row after row of one statement,
            # parsed and planned once (prepared), not once per row as a literal query.
            # Their parameters are typed by the columns they go to, as a NULL must be.
            cursor: psycopg.Cursor[Any] = psycopg.Cursor(self._conn)
            cursor.executemany(statement.sql, [_bind(statement, p) for p in parameters])
            return PgCursor(cursor)
        except psycopg.Error as err:
            raise translate_error(err, self.where) from err

    def close(self) -> None:
        self._conn.close()


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
    if readonly:
        db.execute("SET default_transaction_read_only = on")
    return db


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


class PgConnection(Connection):
    """The :class:`~oomguard.store.connection.Connection` of a PostgreSQL store: ``path``
    is its redacted URL (for messages; nothing lies beside it)."""

    def __init__(self, db: PgDb, url: str) -> None:
        self.db = db
        self.path = Path(redacted(url))
        self.where = redacted(url)
        with _WRITERS_GUARD:
            key = redacted(url)
            lock = _WRITERS.get(key)
            if lock is None:
                lock = _WRITERS[key] = threading.RLock()
        self.writer = lock


__all__ = ["PgConnection", "PgCursor", "PgDb", "connect", "redacted", "translate_error"]
