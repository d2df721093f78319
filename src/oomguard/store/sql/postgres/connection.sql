-- PostgreSQL's own text of the statements of sql/connection.sql.

-- name: begin_immediate
-- Begin a write transaction (READ COMMITTED: one scheduler writes; rows it reads are its own).
BEGIN ISOLATION LEVEL READ COMMITTED;

-- name: wal_checkpoint_passive
-- SQLite's own (its WAL file): nothing to do on PostgreSQL.
SELECT NULL;

-- name: wal_autocheckpoint_late
-- SQLite's own (its WAL file): nothing to do on PostgreSQL.
SELECT NULL;
