"""The SQL connection a facet of the store uses, as a typing ``Protocol``: ``sqlite3``'s
connection satisfies it, and so does the PostgreSQL backend's
(:class:`~oomguard.store.postgres.connection.PgDb`). Facets are typed against it, never
against one driver (docs/ARCHITECTURE.md, "The store")."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

#: a statement's parameters: a sequence for ``?``, a mapping for ``:name``
Params: TypeAlias = Sequence[Any] | Mapping[str, Any]


class Cursor(Protocol):
    """What a statement returns: its rows and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    @property
    def lastrowid(self) -> int | None:
        """The id of the row an ``INSERT`` made (PostgreSQL: what its ``RETURNING id``
        returned)."""
        ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """Runs the store's named statements (their SQLite text; a backend with another
    dialect translates them)."""

    def execute(self, sql: str, parameters: Params = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Params], /) -> Cursor: ...

    def close(self) -> None: ...


__all__ = ["Cursor", "Db", "Params"]
