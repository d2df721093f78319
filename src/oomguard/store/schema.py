"""A store's schema: opening a store file (refusing what is not a store, or is too new),
creating a new one from ``sql/schema.sql`` and migrating an older one through
``sql/migrations/``."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from oomguard.errors import NotAStoreError, SchemaTooNewError, StoreError
from oomguard.store.connection import Connection
from oomguard.store.db import Db
from oomguard.store.queries import MIGRATIONS, SCHEMA, SCHEMA_VERSION, Q, split_sql

APPLICATION = "oomguard"


def connect(path: Path, readonly: bool, busy_timeout: float = 30.0) -> sqlite3.Connection:
    """A connection to the store at ``path``; ``readonly``: opened ``mode=ro`` and
    ``query_only``, so nothing, not even a migration, is ever written. ``busy_timeout``:
    how long a statement waits for another process's write lock, in seconds."""
    if not readonly:
        return sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    db = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro",
        uri=True,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
    )
    db.execute(Q["query_only"])
    return db


def open_connection(
    path: Path, *, readonly: bool, existed: bool, busy_timeout: float = 30.0
) -> Connection:
    """A :class:`Connection` to the store file at ``path`` with the store's pragmas set;
    a file that is not a store is refused (``existed``: the file was not empty).

    Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL`` keeps every committed
    transaction across a crash of the process; ``OOMGUARD_SQLITE_SYNC=FULL`` fsyncs every
    commit."""
    try:
        db = connect(path, readonly, busy_timeout)
        if existed:
            check_existing(db, path)
        elif readonly:
            raise StoreError(f"{str(path)!r} is empty: not a store", path=str(path))
        if not readonly:
            db.execute(Q["journal_wal"])
            sync = os.environ.get("OOMGUARD_SQLITE_SYNC", "NORMAL").lower()
            if sync not in ("off", "normal", "full", "extra"):
                sync = "normal"
            db.execute(Q[f"synchronous_{sync}"])
            db.execute(Q["foreign_keys_off"])
    except sqlite3.DatabaseError as err:
        raise NotAStoreError(
            f"{str(path)!r} is not an oomguard store ({err})", path=str(path)
        ) from err
    return Connection(db, path)


def check_existing(db: Db, path: Path) -> None:
    """Refuse a file that is not an oomguard store, or whose schema is newer than ours."""
    tables = {r[0] for r in db.execute(Q["tables"])}
    if not tables:
        return
    if "meta" not in tables:
        raise NotAStoreError(
            f"{str(path)!r} is an SQLite file but not an oomguard store",
            path=str(path),
        )
    meta = dict(db.execute(Q["meta_all"]).fetchall())
    if meta.get("application") != APPLICATION:
        raise NotAStoreError(
            f"{str(path)!r} is an SQLite file but not an oomguard store",
            path=str(path),
        )
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"store {str(path)!r} has schema version {version}, newer than this "
            f"oomguard understands ({SCHEMA_VERSION}): upgrade oomguard",
            path=str(path),
            version=version,
        )


def migrate(db: Db) -> None:
    """Make an empty file a store (sql/schema.sql) or bring an older one up to date
    (sql/migrations/), inside the caller's transaction."""
    tables = {r[0] for r in db.execute(Q["tables"])}
    current = 0
    if "meta" in tables:
        row = db.execute(Q["schema_version"]).fetchone()
        current = int(row[0]) if row else 0
    if not tables:
        for statement in split_sql(SCHEMA):
            db.execute(statement)
        current = SCHEMA_VERSION
    for version, sql in MIGRATIONS:
        if version > current:
            for statement in split_sql(sql):
                db.execute(statement)
            current = version
    db.execute(
        Q["set_application"],
        (APPLICATION,),
    )
    db.execute(
        Q["set_schema_version"],
        (str(current),),
    )
