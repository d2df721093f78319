-- The statements only PostgreSQL has (store/postgres/): no SQLite original.

-- name: pg_migration_lock
-- Wait for the migrations' advisory lock (held to the end of the transaction): two
-- processes opening a fresh database at once migrate it one after the other.
SELECT pg_advisory_xact_lock(7467837);

-- name: pg_columns
-- Every column of the schema's tables: what a migrated schema is compared by.
SELECT table_name, column_name, data_type, is_nullable, column_default FROM
    information_schema.columns WHERE table_schema = current_schema() ORDER BY table_name,
    column_name;

-- name: pg_indexes
-- Every index of the schema's tables, with its definition.
SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()
    ORDER BY tablename, indexname;

-- name: pg_blob_put
-- Store blob :name (or, already stored, mark it used now: garbage collection spares it).
INSERT INTO blobs (name, data, touched_at) VALUES (:name, :data, :now) ON CONFLICT (name) DO
    UPDATE SET touched_at = excluded.touched_at;

-- name: pg_blob_get
-- A blob's bytes.
SELECT data FROM blobs WHERE name = ?;

-- name: pg_blob_sizes
-- Every blob's name, size and when it was last written or reused.
SELECT name, length(data), touched_at FROM blobs;

-- name: pg_blob_delete
-- Delete blob :name if it is still older than :cutoff and no row refers to it.
DELETE FROM blobs WHERE name = :name AND touched_at < :cutoff AND NOT EXISTS (SELECT 1 FROM
    tasks WHERE params_ref = :name OR payload_ref = :name) AND NOT EXISTS (SELECT 1 FROM results
    WHERE value_ref = :name);

-- name: pg_notify_tasks
-- Tell every listening scheduler that tasks became ready (sent with the transaction's
-- COMMIT, dropped with its ROLLBACK; one per transaction: PostgreSQL folds repeats).
SELECT pg_notify('oomguard_tasks', current_schema());

-- name: pg_listen_tasks
-- Hear pg_notify_tasks on this session (store/postgres/listener.py).
LISTEN oomguard_tasks;

-- name: pg_idle_in_transaction_timeout
-- A session idle inside a transaction this long is ended by the server, its locks released
-- (a replica frozen mid-transaction cannot hold its takeover's row locks for ever).
SET idle_in_transaction_session_timeout = '60s';
