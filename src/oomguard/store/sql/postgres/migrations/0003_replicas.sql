-- Version 3: several schedulers (replicas) on one store: SQLite's version 7
-- (sql/migrations/0007_replicas.sql), the same columns in PostgreSQL's types. How
-- replicas stay correct under READ COMMITTED (row locks, SKIP LOCKED, advisory locks):
-- docs/guide/postgresql.md, "Replicas".
ALTER TABLE schedulers ADD COLUMN replica bigint NOT NULL DEFAULT 0;
ALTER TABLE schedulers ADD COLUMN taken_over_at double precision;
ALTER TABLE schedulers ADD COLUMN taken_over_by text;
ALTER TABLE tasks ADD COLUMN owner text;
ALTER TABLE jobs ADD COLUMN reserved bigint NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN told text;
ALTER TABLE locks ADD COLUMN owner text;
ALTER TABLE outbox_cursors ADD COLUMN holder text;
ALTER TABLE outbox_cursors ADD COLUMN held_until double precision NOT NULL DEFAULT 0;
