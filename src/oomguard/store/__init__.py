"""The durable store: jobs, tasks, attempts, results, events, locks and estimates."""

from oomguard.store.sql_text import SCHEMA_VERSION
from oomguard.store.sqlite import SqliteStore, TaskRow

__all__ = ["SCHEMA_VERSION", "SqliteStore", "TaskRow"]
