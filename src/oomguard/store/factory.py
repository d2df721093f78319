"""Opening a store from its location: the one place that picks a backend."""

from __future__ import annotations

import os

from oomguard.store.location import is_url
from oomguard.store.protocol import Store
from oomguard.store.sqlite import SqliteStore


def open_store(
    location: str | os.PathLike[str],
    *,
    create: bool = True,
    readonly: bool = False,
    busy_timeout: float = 30.0,
) -> Store:
    """The store at ``location``: a path (SQLite), or a ``postgresql://`` (or
    ``postgres://``) URL (PostgreSQL; needs ``pip install 'oomguard[postgres]'``).

    ``create``: make the store if it does not exist; ``readonly``: open an existing store
    without writing anything to it (safe beside a live scheduler); ``busy_timeout``: how
    long a statement waits for another process's write lock (SQLite), or how long
    connecting may take (PostgreSQL), in seconds."""
    text = os.fspath(location)
    if is_url(text):
        # Imported here: SQLite users never need psycopg.
        from oomguard.store.postgres.store import PostgresStore

        return PostgresStore(text, create=create, readonly=readonly, busy_timeout=busy_timeout)
    return SqliteStore(location, create=create, readonly=readonly, busy_timeout=busy_timeout)


__all__ = ["is_url", "open_store"]
