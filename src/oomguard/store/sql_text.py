"""The SQL of the store: numbered migrations and named queries, read from ``sql/``."""

from __future__ import annotations

import operator
import re
import sqlite3
from collections.abc import Callable
from importlib import resources
from typing import Any

from oomguard.jobs.model import OPEN_STATES, TaskState


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("oomguard.store") / "sql" / "migrations"
    found = []
    for entry in folder.iterdir():
        match = re.match(r"^(\d{4})_.*\.sql$", entry.name)
        if match:
            found.append((int(match[1]), entry.read_text()))
    return sorted(found)


def _queries() -> dict[str, str]:
    text = (resources.files("oomguard.store") / "sql" / "queries.sql").read_text()
    queries: dict[str, str] = {}
    name = None
    body: list[str] = []
    for line in text.splitlines():
        match = re.match(r"^-- name: (\w+)", line)
        if match:
            if name:
                queries[name] = "\n".join(body).strip()
            name, body = match[1], []
        elif name and not line.startswith("--"):
            body.append(line)
    if name:
        queries[name] = "\n".join(body).strip()
    return queries


class Positional:
    """A named query rewritten with ``?`` placeholders, and the getter that lays a row's
    parameters (a dict) out in their order: SQLite binds a tuple faster than it looks up
    each name in a dict, row after row of an ``executemany``."""

    def __init__(self, sql: str) -> None:
        names: list[str] = []

        def placeholder(match: re.Match[str]) -> str:
            if match[1] is None:
                return match[0]  # a string literal: left as it is
            names.append(match[1])
            return "?"

        self.sql = re.sub(r"'[^']*'|:(\w+)", placeholder, sql)
        getter = operator.itemgetter(*names)
        #: a row's values in the order of the placeholders (always a tuple)
        self.values: Callable[[dict[str, Any]], tuple[Any, ...]] = (
            getter if len(names) > 1 else (lambda row: (getter(row),))
        )


MIGRATIONS = _migrations()
#: the whole schema at SCHEMA_VERSION, for a new store
SCHEMA = (resources.files("oomguard.store") / "sql" / "schema.sql").read_text()
SCHEMA_VERSION = MIGRATIONS[-1][0]
Q = _queries()
#: the named queries with positional placeholders, for the hot path's ``executemany``
POSITIONAL = {name: Positional(sql) for name, sql in Q.items() if ":" in sql}
#: ``('pending', 'ready', 'queued', 'running')``: the task states that may still run
OPEN_SQL = "(" + ", ".join(f"'{state}'" for state in OPEN_STATES) + ")"
#: every task state, for queries by job that the index ``tasks_state`` (state, job_id, grp)
#: answers with one seek per state
ALL_STATES_SQL = "(" + ", ".join(f"'{state.value}'" for state in TaskState) + ")"
#: a job's lowest open group: one indexed MIN per open state (an IN over the states would
#: read every open task of the job)
LOW_GROUP_SQL = (
    "SELECT MIN(g) FROM ("
    + " UNION ALL ".join(
        f"SELECT MIN(grp) AS g FROM tasks WHERE state = '{state}' AND job_id = :job_id"
        for state in OPEN_STATES
    )
    + ")"
)


def split_sql(sql: str) -> list[str]:
    """Statements of a script; ``sqlite3.complete_statement`` knows comments and strings."""
    statements = []
    current: list[str] = []
    for line in sql.splitlines():
        current.append(line)
        text = "\n".join(current)
        if sqlite3.complete_statement(text):
            if text.strip():
                statements.append(text.strip())
            current = []
    rest = "\n".join(current).strip()
    if rest and not all(x.strip().startswith("--") or not x.strip() for x in current):
        statements.append(rest)
    return statements
