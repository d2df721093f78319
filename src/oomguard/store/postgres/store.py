"""The PostgreSQL store: oomguard's durable state in a PostgreSQL database (or a schema of
one), for a server whose results any host that reaches the database can read.

It keeps every promise of the SQLite store with the same statements (translated,
:mod:`oomguard.store.postgres.dialect`) and the same facets: an attempt's end, its result,
the task's state, the lock's release and the dependants in one transaction; results never
written twice (``ON CONFLICT DO NOTHING`` and the check before it); the schema versioned
(``sql/postgres/migrations/``). What differs is where it is: a URL, not a file; large
payloads in the ``blobs`` table, not in files beside the store. One scheduler at a time,
as with SQLite (its lease in ``schedulers``).
"""

from __future__ import annotations

from collections.abc import Callable

from oomguard.store.admin import Admin, Retention
from oomguard.store.dashboard import DashboardReads
from oomguard.store.leases import Leases
from oomguard.store.outbox import Outbox
from oomguard.store.parts import PartBook
from oomguard.store.postgres.blobs import BlobTable
from oomguard.store.postgres.connection import PgConnection, connect, redacted
from oomguard.store.postgres.listener import Listener
from oomguard.store.postgres.schema import migrate, require_store
from oomguard.store.samples import Samples
from oomguard.store.sqlite import SqliteStore
from oomguard.store.views import Queries
from oomguard.store.wakeups import Wakeups


class PostgresStore(SqliteStore):
    """oomguard's durable state in a PostgreSQL database.

    Its methods are the SQLite store's (the same statements, run in PostgreSQL's dialect
    by the connection); only opening differs. One connection per store object: use one
    per thread, as with SQLite."""

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        readonly: bool = False,
        busy_timeout: float = 30.0,
    ) -> None:
        """Open (or, with ``create``, make: migrate an empty database or schema) the store
        at ``url``; ``readonly``: every transaction read-only, nothing migrated.
        ``busy_timeout``: how long connecting may take (seconds)."""
        #: what :func:`~oomguard.store.factory.open_store` takes to open it again
        self.location = url
        where = redacted(url)
        db = connect(url, readonly=readonly, timeout=busy_timeout)
        self._conn = PgConnection(db, url)
        self.path = self._conn.path
        self.db = db
        self._writer = self._conn.writer
        try:
            if create and not readonly:
                migrate(self._conn, where)
            else:
                require_store(db, where)
        except BaseException:
            db.close()
            raise
        self._has_aggregates: dict[str, bool] = {}
        #: large payloads, params and results, in the blobs table
        self.blobs = BlobTable(self._conn)  # type: ignore[assignment]
        self.parts = PartBook(self._conn)
        self.leases = Leases(self._conn)
        self.queries = Queries(self._conn, self.blobs)
        self.admin = Admin(self._conn, self.queries)
        self.samples = Samples(self._conn)
        self.retention = Retention(self._conn)
        self.outbox = Outbox(self._conn, self.queries)
        self.dashboard = DashboardReads(self._conn)

    def listen(self, wake: Callable[[], None]) -> Wakeups:
        """A :class:`~oomguard.store.postgres.listener.Listener` on this database: its own
        connection and thread, ``wake()`` for each committed submission, anyone's."""
        return Listener(self.location, wake)

    def __enter__(self) -> PostgresStore:
        return self


__all__ = ["PostgresStore"]
