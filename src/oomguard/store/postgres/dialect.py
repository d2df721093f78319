"""The store's named statements in PostgreSQL's dialect.

There is one set of named statements (``store/sql/*.sql``, written for SQLite). Each is
given to PostgreSQL with its placeholders translated (``?`` -> ``%s``, ``:name`` ->
``%(name)s``, a literal ``%`` doubled; string literals keep their ``?`` and ``:``), except
where the dialects really differ: ``store/sql/postgres/<same file>.sql`` then holds the
statement under the same name (``INSERT OR REPLACE`` -> ``ON CONFLICT``, ``json_each(?)``
-> ``jsonb_array_elements_text``, scalar ``MAX(a, b)`` -> ``GREATEST``, ``PRAGMA``, a
subquery in ``FROM`` without an alias, ``SUM`` of a comparison). An override keeps the
original's placeholders (the same names; for ``?``, the same order).
``store/sql/postgres/postgres.sql`` holds the few statements only PostgreSQL has (the
migrations' advisory lock, the catalogue reads).

The facets run the SQLite text they know (``Q[name]``, ``POSITIONAL[name].sql``); the
PostgreSQL connection looks the text up in :data:`BY_TEXT` and runs its translation. A
text it does not know (a test's own query) is translated on the fly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from oomguard.store.queries import _EXPANSIONS, POSITIONAL, Q, parse_named

_PG_DIR = resources.files("oomguard.store") / "sql" / "postgres"
#: the file of statements PostgreSQL alone has (no SQLite original)
OWN_FILE = "postgres.sql"

_TOKENS = re.compile(r"'(?:[^']|'')*'|%|\?|(?<![:\w]):(\w+)")


@dataclass(frozen=True)
class Statement:
    """A statement as PostgreSQL runs it; ``names``: a positional statement's parameters
    by name, in the order of SQLite's ``?`` (its values are bound by name here)."""

    sql: str
    names: tuple[str, ...] | None = None


def translate(sql: str) -> str:
    """``sql`` with psycopg's placeholders: ``?`` -> ``%s``, ``:name`` -> ``%(name)s``, a
    literal ``%`` doubled (in string literals too: psycopg reads the whole text); a ``?``
    or ``:`` in a string literal stays."""

    def token(match: re.Match[str]) -> str:
        text = match[0]
        if text.startswith("'"):
            return text.replace("%", "%%")
        if text == "%":
            return "%%"
        if text == "?":
            return "%s"
        return f"%({match[1]})s"

    return _TOKENS.sub(token, sql)


def placeholder_names(sql: str) -> list[str]:
    """The ``:name`` placeholders of ``sql`` in order (string literals skipped), as
    :class:`~oomguard.store.queries.Positional` lays them out."""
    return [m[1] for m in _TOKENS.finditer(sql) if m[1] is not None]


def _expanded(sql: str) -> str:
    for key, value in _EXPANSIONS.items():
        sql = sql.replace(key, value)
    return sql


def load_overrides() -> tuple[dict[str, str], dict[str, str]]:
    """``(overrides, own)``: statements of ``sql/postgres/<file>.sql`` by name (each must
    name a statement of ``sql/<file>.sql``), and those of ``sql/postgres/postgres.sql``."""
    overrides: dict[str, str] = {}
    own: dict[str, str] = {}
    for entry in sorted(_PG_DIR.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        target = own if entry.name == OWN_FILE else overrides
        for name, (_, sql) in parse_named(entry.read_text()).items():
            if name in overrides or name in own:
                raise RuntimeError(f"postgres statement {name!r} is named twice")  # a bug
            target[name] = _expanded(sql)
    return overrides, own


def build() -> tuple[dict[str, str], dict[str, Statement]]:
    """``(PG, BY_TEXT)``: every statement by name in PostgreSQL's dialect, and what the
    connection runs for each SQLite text the facets hand it."""
    overrides, own = load_overrides()
    unknown = set(overrides) - set(Q)
    if unknown:
        raise RuntimeError(f"postgres overrides name no statement: {sorted(unknown)}")
    pg: dict[str, str] = {}
    by_text: dict[str, Statement] = {}
    for name, sqlite_sql in Q.items():
        pg[name] = translate(overrides.get(name, sqlite_sql))
        previous = by_text.get(sqlite_sql)
        if previous is not None and previous.sql != pg[name]:
            raise RuntimeError(f"statement {name!r} repeats another's text, not its override")
        by_text[sqlite_sql] = Statement(pg[name])
    for name, positional in POSITIONAL.items():
        # A positional twin whose text is a named statement's (insert_outbox's is
        # outbox_add's) runs as that statement: the same columns in the same order.
        if positional.sql not in by_text:
            by_text[positional.sql] = Statement(pg[name], tuple(placeholder_names(Q[name])))
    for name, sql in own.items():
        pg[name] = translate(sql)
        by_text[sql] = Statement(pg[name])
    return pg, by_text


#: every statement by name, as PostgreSQL runs it (``PG[name]``: to read, not to run)
PG, BY_TEXT = build()
#: the statements only PostgreSQL has, by name, in the text the connection takes (with
#: SQLite's placeholders, as ``Q[name]``)
OWN = load_overrides()[1]

__all__ = ["BY_TEXT", "OWN", "OWN_FILE", "PG", "Statement", "load_overrides", "translate"]
