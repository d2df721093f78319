"""Opening a store from its location: the one place that picks a backend."""

from __future__ import annotations

import os

from oomguard.errors import StoreError
from oomguard.store.protocol import Store
from oomguard.store.sqlite import SqliteStore


def open_store(
    location: str | os.PathLike[str],
    *,
    create: bool = True,
    readonly: bool = False,
    busy_timeout: float = 30.0,
) -> Store:
    """The store at ``location``: a path (SQLite) today; ``postgresql://...`` is refused
    with a :class:`~oomguard.errors.StoreError` until that backend exists (issue 29).

    ``create``: make the store if it does not exist; ``readonly``: open an existing store
    without writing anything to it (safe beside a live scheduler); ``busy_timeout``: how
    long a statement waits for another process's write lock, in seconds."""
    text = os.fspath(location)
    if text.startswith(("postgresql://", "postgres://")):
        raise StoreError(
            f"store {text.split('@')[-1]!r}: PostgreSQL stores are not supported yet "
            "(only a path to an SQLite file is)",
            path=text.split("@")[-1],
        )
    return SqliteStore(location, create=create, readonly=readonly, busy_timeout=busy_timeout)


__all__ = ["open_store"]
