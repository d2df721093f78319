"""Many rows of one write as one statement: the hot path's ``executemany`` on PostgreSQL.

An ``executemany`` of N rows is N statements for the server (each bound, executed and
answered) and N rounds of psycopg's per-row work for the client. For the writes every task
makes (its attempt inserted and ended, its state queued, running and succeeded, its result,
its insert at submission), ``store/sql/postgres/batches/*.sql`` holds one statement that
takes each parameter as an array of the rows' values (``unnest``) and writes them all:
one statement whatever N. Rows that repeat the key of an ``UPDATE`` (the last write of a
row must win, as one by one) run one by one instead (:meth:`Batch.columns` says None).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from oomguard.store.db import Params
from oomguard.store.postgres.dialect import placeholder_names, translate
from oomguard.store.queries import POSITIONAL, Q, parse_named

_DIR = resources.files("oomguard.store") / "sql" / "postgres" / "batches"
_CAST = re.compile(r"CAST\((\?|:\w+) AS ([\w ]+)\[\]\)")
_KEY = re.compile(r"\bkey: (\w+)")


def _float(value: Any) -> Any:
    # An array is typed by its first value: an int among floats (a timeout of 30) must
    # not make the column's array an integer one.
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


@dataclass(frozen=True)
class Batch:
    """The one-statement form of a write: its text for psycopg, its parameters (by name,
    or by position for a ``?`` statement), which of them are ``double precision``, and the
    key that finds an updated row (None for an insert)."""

    sql: str
    names: tuple[str, ...] | None
    floats: tuple[bool, ...]
    key: str | int | None

    def columns(self, rows: Sequence[Params]) -> Params | None:
        """The rows' values as one array per parameter; None when rows repeat a key."""
        if self.names is not None:
            named: Sequence[Mapping[str, Any]] = rows  # type: ignore[assignment]
            by_name = {
                name: [_float(r[name]) for r in named] if floated else [r[name] for r in named]
                for name, floated in zip(self.names, self.floats, strict=True)
            }
            keys = by_name[self.key] if isinstance(self.key, str) else None
            if keys is not None and len(set(keys)) < len(keys):
                return None
            return by_name
        by_place = [
            [_float(v) for v in column] if floated else list(column)
            for column, floated in zip(zip(*rows, strict=True), self.floats, strict=True)
        ]
        if isinstance(self.key, int) and len(set(by_place[self.key - 1])) < len(rows):
            return None
        return by_place


def _batch(text: str, about: str) -> Batch:
    casts = _CAST.findall(text)
    floats = tuple(kind == "double precision" for _, kind in casts)
    found = _KEY.search(about)
    key: str | int | None = None
    if found:
        key = int(found[1]) if found[1].isdigit() else found[1]
    if casts and casts[0][0] == "?":
        return Batch(translate(text), None, floats, key)
    names = tuple(placeholder_names(text))
    if [f":{n}" for n in names] != [place for place, _ in casts]:
        raise RuntimeError(f"a batch statement casts other than its parameters: {text}")  # a bug
    return Batch(translate(text), names, floats, key)


def load() -> dict[str, Batch]:
    """Every batch form by the SQLite text the facets run (a statement's, and its
    positional twin's); a batch form names a statement of ``sql/*.sql``."""
    by_text: dict[str, Batch] = {}
    for entry in sorted(_DIR.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, (about, text) in parse_named(entry.read_text()).items():
            if name not in Q:
                raise RuntimeError(f"batch statement {name!r} names no statement")  # a bug
            batch = _batch(text, about)
            by_text[Q[name]] = batch
            if name in POSITIONAL and batch.names is not None:
                by_text[POSITIONAL[name].sql] = batch
    return by_text


#: the batch forms by SQLite text (see :func:`load`)
BATCHES = load()

__all__ = ["BATCHES", "Batch", "load"]
