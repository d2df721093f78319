"""The store's SQL, loaded from ``sql/``: the numbered migrations, the schema of a new
store, and every statement the store runs, by name.

This is the one module that reads SQL text (docs/ARCHITECTURE.md, "The store"). Each
``sql/*.sql`` file but ``schema.sql`` holds named statements::

    -- name: take_ready
    -- What it does, in one line.
    SELECT ...;

Names are unique across the files. Nothing is assembled in Python beyond placeholders
(``:name`` or ``?``; a list is passed as JSON and read with ``json_each(?)``); the one
expansion is of the task state lists, defined once in :mod:`oomguard.jobs.model`:
``{open_states}`` (the states that may still run) and ``{all_states}``.
"""

from __future__ import annotations

import operator
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import TypeAlias

from oomguard.jobs.model import OPEN_STATES, TaskState

_SQL_DIR = resources.files("oomguard.store") / "sql"

#: a value SQLite stores (a statement's parameter)
SqlValue: TypeAlias = str | int | float | bytes | None
#: a statement's named parameters
SqlParams: TypeAlias = dict[str, SqlValue]


def _state_list(states: Iterable[str]) -> str:
    return "(" + ", ".join(f"'{state}'" for state in states) + ")"


#: the expansions of the state lists in the statements' text
_EXPANSIONS = {
    "{open_states}": _state_list(OPEN_STATES),
    "{all_states}": _state_list(state.value for state in TaskState),
}


def _migrations() -> list[tuple[int, str]]:
    found = []
    for entry in (_SQL_DIR / "migrations").iterdir():
        match = re.match(r"^(\d{4})_.*\.sql$", entry.name)
        if match:
            found.append((int(match[1]), entry.read_text()))
    return sorted(found)


def parse_named(text: str) -> dict[str, tuple[str, str]]:
    """``{name: (description, statement)}`` of a file of named statements."""
    queries: dict[str, tuple[str, str]] = {}
    name: str | None = None
    about: list[str] = []
    body: list[str] = []

    def done() -> None:
        if name is not None:
            queries[name] = (" ".join(about), "\n".join(body).strip())

    for line in text.splitlines():
        match = re.match(r"^-- name: (\w+)", line)
        if match:
            done()
            name, about, body = match[1], [], []
        elif name is not None and line.startswith("--"):
            if not body:
                about.append(line[2:].strip())
        elif name is not None:
            body.append(line)
    done()
    return queries


def _queries() -> tuple[dict[str, str], dict[str, str]]:
    statements: dict[str, str] = {}
    described: dict[str, str] = {}
    for entry in sorted(_SQL_DIR.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql") or entry.name == "schema.sql":
            continue
        for name, (about, sql) in parse_named(entry.read_text()).items():
            if name in statements:
                raise RuntimeError(f"query {name!r} is named twice in sql/")  # a packaging bug
            for key, value in _EXPANSIONS.items():
                sql = sql.replace(key, value)
            statements[name] = sql
            described[name] = about
    return statements, described


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
        #: a row's values in the order of the placeholders (always a tuple)
        self.values: Callable[[Mapping[str, SqlValue]], tuple[SqlValue, ...]]
        if len(names) > 1:
            self.values = operator.itemgetter(*names)
        elif names:
            getter = operator.itemgetter(names[0])
            self.values = lambda row: (getter(row),)
        else:
            self.values = lambda row: ()


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


MIGRATIONS = _migrations()
#: the whole schema at SCHEMA_VERSION, for a new store
SCHEMA = (_SQL_DIR / "schema.sql").read_text()
SCHEMA_VERSION = MIGRATIONS[-1][0]
#: every named statement, by name
Q, DESCRIPTIONS = _queries()
#: the named queries with positional placeholders, for the hot path's ``executemany``
POSITIONAL = {name: Positional(sql) for name, sql in Q.items() if ":" in sql}

__all__ = [
    "DESCRIPTIONS",
    "MIGRATIONS",
    "POSITIONAL",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Positional",
    "Q",
    "SqlParams",
    "SqlValue",
    "parse_named",
    "split_sql",
]
