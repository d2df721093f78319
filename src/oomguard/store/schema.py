"""A store's schema: refusing what is not a store (or is too new), creating a new one from
``sql/schema.sql`` and migrating an older one through ``sql/migrations/``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from oomguard.errors import NotAStoreError, SchemaTooNewError
from oomguard.store.sql_text import MIGRATIONS, SCHEMA, SCHEMA_VERSION, split_sql

APPLICATION = "oomguard"


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection to the store at ``path``; ``readonly``: opened ``mode=ro`` and
    ``query_only``, so nothing, not even a migration, is ever written."""
    if not readonly:
        return sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    db = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro",
        uri=True,
        timeout=30.0,
        isolation_level=None,
        check_same_thread=False,
    )
    db.execute("PRAGMA query_only = 1")
    return db


def check_existing(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a file that is not an oomguard store, or whose schema is newer than ours."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return
    if "meta" not in tables:
        raise NotAStoreError(
            f"{str(path)!r} is an SQLite file but not an oomguard store",
            path=str(path),
        )
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
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


def migrate(db: sqlite3.Connection) -> None:
    """Make an empty file a store (sql/schema.sql) or bring an older one up to date
    (sql/migrations/), inside the caller's transaction."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    current = 0
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
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
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('application', ?)",
        (APPLICATION,),
    )
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(current),),
    )
