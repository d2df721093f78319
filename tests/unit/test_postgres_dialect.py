"""The PostgreSQL dialect of the store's statements (store/postgres/dialect.py), without a
database: the translation of placeholders, and the overrides' bookkeeping. That every
statement then runs on a real PostgreSQL is tests/integration/test_postgres_store.py's."""

from __future__ import annotations

from importlib import resources

from oomguard.store.postgres.dialect import BY_TEXT, OWN, PG, load_overrides, translate
from oomguard.store.queries import POSITIONAL, Q, parse_named


def test_placeholders_are_translated_and_literals_kept() -> None:
    assert translate("SELECT a FROM t WHERE b = ? AND c = :name") == (
        "SELECT a FROM t WHERE b = %s AND c = %(name)s"
    )
    # A literal %: doubled (psycopg reads the whole text), in a string literal too.
    assert translate("SELECT rn % ? FROM t WHERE x LIKE 'a%'") == (
        "SELECT rn %% %s FROM t WHERE x LIKE 'a%%'"
    )
    # A ? or :name inside a string literal is text; a cast's :: is not a placeholder.
    assert translate("SELECT '?', ':x', 'it''s :y', CAST(? AS jsonb), a::text") == (
        "SELECT '?', ':x', 'it''s :y', CAST(%s AS jsonb), a::text"
    )


def test_every_override_names_an_existing_statement() -> None:
    overrides, own = load_overrides()
    assert overrides and set(overrides) <= set(Q)
    assert not set(own) & set(Q)  # PostgreSQL's own statements name nothing of SQLite's
    # Each override lives in the file named as its original's.
    folder = resources.files("oomguard.store") / "sql"
    for entry in (folder / "postgres").iterdir():
        if entry.name.endswith(".sql") and entry.name != "postgres.sql":
            originals = parse_named((folder / entry.name).read_text())
            assert set(parse_named(entry.read_text())) <= set(originals), entry.name


def test_overrides_keep_the_originals_placeholders() -> None:
    """An override takes the same parameters as its original: the same names, or as many
    ``?``."""
    import re

    overrides, _ = load_overrides()
    for name, sql in overrides.items():
        original = Q[name]
        for text in (sql, original):
            assert not ("?" in text and re.search(r"(?<![:\w]):\w", text)), name
        assert set(re.findall(r"(?<![:\w]):(\w+)", sql)) == set(
            re.findall(r"(?<![:\w]):(\w+)", original)
        ), name
        assert sql.count("?") == original.count("?"), name


def test_every_statement_has_its_postgresql_text() -> None:
    """Every statement translates (or has an override), and the connection finds it by
    the SQLite text the facets hand it, named or positional."""
    assert set(Q) <= set(PG) and set(OWN) <= set(PG)
    for name, sql in Q.items():
        assert BY_TEXT[sql].sql == PG[name]
        assert "?" not in PG[name].replace("'?'", "")
    for name, positional in POSITIONAL.items():
        statement = BY_TEXT[positional.sql]
        if positional.sql in Q.values():  # the text of a named statement: run as that one
            assert statement.names is None
            assert statement.sql.count("%s") == len(positional.values(_every_name(name)))
            continue
        assert statement.names is not None and statement.sql == PG[name]
        row = {n: i for i, n in enumerate(statement.names)}
        assert positional.values(row) == tuple(row[n] for n in statement.names)


def _every_name(name: str) -> dict[str, int]:
    import re

    return {n: 0 for n in re.findall(r":(\w+)", Q[name])}
