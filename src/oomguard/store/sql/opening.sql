-- The statements that open, check and migrate a store file (store/schema.py), by name.

-- name: query_only
-- A read-only connection: nothing, not even a migration, is ever written.
PRAGMA query_only = 1;

-- name: journal_wal
-- Write-ahead log: readers never block the writer.
PRAGMA journal_mode = WAL;

-- name: foreign_keys_off
-- Foreign keys unchecked (the store's writes keep its references).
PRAGMA foreign_keys = OFF;

-- name: tables
-- The file's tables (none: an empty file, made a store).
SELECT name FROM sqlite_master WHERE type='table';

-- name: meta_all
-- Every meta key and value (application, schema_version, ...).
SELECT key, value FROM meta;

-- name: schema_version
-- The store's schema version.
SELECT value FROM meta WHERE key = 'schema_version';

-- name: set_application
-- Mark the file an oomguard store.
INSERT OR REPLACE INTO meta (key, value) VALUES ('application', ?);

-- name: set_schema_version
-- Record the store's schema version after a migration.
INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?);

-- name: synchronous_off
-- OOMGUARD_SQLITE_SYNC=OFF: no fsync at all (a crash of the machine may corrupt the store).
PRAGMA synchronous = OFF;

-- name: synchronous_normal
-- The default: a commit survives a crash of the process; a power loss may drop the last ones.
PRAGMA synchronous = NORMAL;

-- name: synchronous_full
-- OOMGUARD_SQLITE_SYNC=FULL: every commit is fsynced.
PRAGMA synchronous = FULL;

-- name: synchronous_extra
-- OOMGUARD_SQLITE_SYNC=EXTRA: FULL, and the directory is fsynced too.
PRAGMA synchronous = EXTRA;
