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


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array(values: Sequence[Any], kind: str) -> str:
    """The text of an array of ``kind`` (``{1,NULL,2}``), built here with one join:
    psycopg's list dumper works value by value in Python, and cost the loop a sixth of
    its time. An int among a ``double precision`` column's floats is a number too."""
    if kind == "bigint":
        items = ["NULL" if v is None else str(int(v)) for v in values]
    elif kind == "double precision":
        items = ["NULL" if v is None else repr(float(v)) for v in values]
    elif kind == "bytea":
        items = ["NULL" if v is None else '"\\\\x' + bytes(v).hex() + '"' for v in values]
    else:
        items = ["NULL" if v is None else _quoted(str(v)) for v in values]
    return "{" + ",".join(items) + "}"


@dataclass(frozen=True)
class Batch:
    """The one-statement form of a write: its text for psycopg, its parameters (by name,
    or by position for a ``?`` statement), each one's type (``bigint``, ``double
    precision``, ``text`` or ``bytea``: an array of it), and the key that finds an updated
    row (None for an insert)."""

    sql: str
    names: tuple[str, ...] | None
    kinds: tuple[str, ...]
    key: str | int | None

    def columns(self, rows: Sequence[Params]) -> Params | None:
        """The rows' values as one array (its text) per parameter; None when rows repeat
        a key."""
        if self.names is not None:
            named: Sequence[Mapping[str, Any]] = rows  # type: ignore[assignment]
            values = [[r[name] for r in named] for name in self.names]
            key = self.names.index(self.key) if isinstance(self.key, str) else None
        else:
            values = [list(column) for column in zip(*rows, strict=True)]
            key = self.key - 1 if isinstance(self.key, int) else None
        if key is not None and len(set(values[key])) < len(rows):
            return None
        arrays = [_array(column, kind) for column, kind in zip(values, self.kinds, strict=True)]
        return arrays if self.names is None else dict(zip(self.names, arrays, strict=True))


def _batch(text: str, about: str) -> Batch:
    casts = _CAST.findall(text)
    kinds = tuple(kind for _, kind in casts)
    if set(kinds) - {"bigint", "double precision", "text", "bytea"}:
        raise RuntimeError(f"a batch statement casts to a type not built here: {text}")  # a bug
    found = _KEY.search(about)
    key: str | int | None = None
    if found:
        key = int(found[1]) if found[1].isdigit() else found[1]
    if casts and casts[0][0] == "?":
        return Batch(translate(text), None, kinds, key)
    names = tuple(placeholder_names(text))
    if [f":{n}" for n in names] != [place for place, _ in casts]:
        raise RuntimeError(f"a batch statement casts other than its parameters: {text}")  # a bug
    return Batch(translate(text), names, kinds, key)


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
