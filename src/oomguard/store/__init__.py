"""The durable store: jobs, tasks, attempts, results, events, locks and estimates.

Use it through :class:`Store` (the Protocol) and get one from :func:`open_store`."""

from oomguard.store.factory import open_store
from oomguard.store.protocol import Store
from oomguard.store.queries import SCHEMA_VERSION
from oomguard.store.records import TaskRow
from oomguard.store.sqlite import SqliteStore

__all__ = ["SCHEMA_VERSION", "SqliteStore", "Store", "TaskRow", "open_store"]
