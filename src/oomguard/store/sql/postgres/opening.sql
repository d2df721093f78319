-- PostgreSQL's own text of the statements of sql/opening.sql (store/postgres/schema.py).

-- name: query_only
-- A read-only connection: every transaction of the session is read-only.
SET default_transaction_read_only = on;

-- name: journal_wal
-- SQLite's own: PostgreSQL always writes ahead.
SELECT NULL;

-- name: foreign_keys_off
-- SQLite's own: the PostgreSQL schema declares no foreign keys to switch off.
SELECT NULL;

-- name: tables
-- The schema's tables (none: an empty database or schema, made a store).
SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()
    AND table_type = 'BASE TABLE';

-- name: set_application
-- Mark the database an oomguard store.
INSERT INTO meta (key, value) VALUES ('application', ?) ON CONFLICT (key) DO UPDATE SET
    value = excluded.value;

-- name: set_schema_version
-- Record the store's schema version after a migration.
INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET
    value = excluded.value;

-- name: synchronous_off
-- SQLite's own (PostgreSQL: synchronous_commit, the server's setting).
SELECT NULL;

-- name: synchronous_normal
-- SQLite's own (PostgreSQL: synchronous_commit, the server's setting).
SELECT NULL;

-- name: synchronous_full
-- SQLite's own (PostgreSQL: synchronous_commit, the server's setting).
SELECT NULL;

-- name: synchronous_extra
-- SQLite's own (PostgreSQL: synchronous_commit, the server's setting).
SELECT NULL;
