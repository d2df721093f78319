"""The durable store: jobs, tasks, attempts, results, events, locks and estimates."""

from oomguard.store.sqlite import SCHEMA_VERSION, SqliteStore, TaskRow

__all__ = ["SCHEMA_VERSION", "SqliteStore", "TaskRow"]
