"""A PostgreSQL store's schema: refusing a schema that is not a store (or is too new), and
migrating through ``sql/postgres/migrations/`` under an advisory lock, so that two
processes opening a fresh database at once migrate it one after the other."""

from __future__ import annotations

import re
from importlib import resources

from oomguard.errors import NotAStoreError, SchemaTooNewError, StoreError
from oomguard.store.connection import Connection
from oomguard.store.db import Db
from oomguard.store.postgres.dialect import OWN
from oomguard.store.queries import Q, split_sql

APPLICATION = "oomguard"


def _migrations() -> list[tuple[int, str]]:
    found = []
    folder = resources.files("oomguard.store") / "sql" / "postgres" / "migrations"
    for entry in folder.iterdir():
        match = re.match(r"^(\d{4})_.*\.sql$", entry.name)
        if match:
            found.append((int(match[1]), entry.read_text()))
    return sorted(found)


#: PostgreSQL's migrations, numbered on their own (version 1 is SQLite's version 6, version 3
#: its version 7)
MIGRATIONS = _migrations()
SCHEMA_VERSION = MIGRATIONS[-1][0]


def stored_version(db: Db, where: str) -> int | None:
    """The store's schema version; None for a schema with no tables (not made yet).
    Refuses a schema that is not an oomguard store, or one newer than this oomguard."""
    tables = {r[0] for r in db.execute(Q["tables"])}
    if not tables:
        return None
    meta = dict(db.execute(Q["meta_all"]).fetchall()) if "meta" in tables else {}
    if meta.get("application") != APPLICATION:
        raise NotAStoreError(
            f"{where} has tables but is not an oomguard store (use an empty database or schema)",
            path=where,
        )
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"store {where} has schema version {version}, newer than this oomguard "
            f"understands ({SCHEMA_VERSION}): upgrade oomguard",
            path=where,
            version=version,
        )
    return version


def migrate(conn: Connection, where: str, *, up_to: int | None = None) -> int:
    """Make an empty schema a store, or bring an older one up to date (to ``up_to``, for
    tests), in one transaction under the migrations' advisory lock; the version reached."""
    target = SCHEMA_VERSION if up_to is None else up_to
    with conn.transaction() as db:
        db.execute(OWN["pg_migration_lock"])
        current = stored_version(db, where) or 0
        for version, sql in MIGRATIONS:
            if current < version <= target:
                for statement in split_sql(sql):
                    db.execute(statement)
                current = version
        db.execute(Q["set_application"], (APPLICATION,))
        db.execute(Q["set_schema_version"], (str(current),))
    return current


def require_store(db: Db, where: str) -> None:
    """Refuse a schema with no store in it (``create=False``, or read-only)."""
    if stored_version(db, where) is None:
        raise StoreError(f"no store at {where}", path=where)


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "require_store", "stored_version"]
