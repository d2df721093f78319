-- PostgreSQL's own text of the statements of sql/admin.sql where the dialects differ
-- (store/postgres/dialect.py); the same names and placeholders.

-- name: set_meta
-- Set a meta key (ON CONFLICT for INSERT OR REPLACE).
INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: add_counter
-- Add to a store-wide counter, creating it at the delta (the column qualified).
INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value =
    counters.value + excluded.value;

-- name: forget_attempts
-- Delete the attempts of the tasks in the JSON list ?.
DELETE FROM attempts WHERE task_id IN (SELECT CAST(value AS bigint) FROM
    jsonb_array_elements_text(CAST(? AS jsonb)) AS value);

-- name: forget_results
-- Delete the results of the tasks in the JSON list ?.
DELETE FROM results WHERE task_id IN (SELECT CAST(value AS bigint) FROM
    jsonb_array_elements_text(CAST(? AS jsonb)) AS value);

-- name: forget_locks
-- Delete the locks held by the tasks in the JSON list ?.
DELETE FROM locks WHERE task_id IN (SELECT CAST(value AS bigint) FROM
    jsonb_array_elements_text(CAST(? AS jsonb)) AS value);

-- name: forget_tasks
-- Delete the tasks in the JSON list ?.
DELETE FROM tasks WHERE id IN (SELECT CAST(value AS bigint) FROM
    jsonb_array_elements_text(CAST(? AS jsonb)) AS value);

-- name: vacuum
-- Compact the database (run outside a transaction).
VACUUM;

-- name: wal_checkpoint
-- SQLite's own (its WAL file): nothing to do on PostgreSQL.
SELECT NULL;

-- name: count_chosen_tasks
-- How many of a job's failed tasks a dashboard retry would touch (see sql/admin.sql).
SELECT count(*) FROM tasks WHERE job_id = :job_id AND state = 'failed' AND (kind = 'task' OR deps <= 0 OR (kind = 'aggregate' AND :classes IS NULL AND :ids IS NULL AND :memory_key IS NULL)) AND (:classes IS NULL OR failure_class IN (SELECT jsonb_array_elements_text(CAST(:classes AS jsonb)))) AND (:ids IS NULL OR id IN (SELECT CAST(value AS bigint) FROM jsonb_array_elements_text(CAST(:ids AS jsonb)) AS value)) AND (:memory_key IS NULL OR coalesce(memory_key, fn) = :memory_key);

-- name: retry_chosen_tasks
-- Make the chosen failed tasks of a job ready (see sql/admin.sql; GREATEST for MAX(a, b);
-- each parameter typed, so that it is bound on the server too).
UPDATE tasks SET state = 'ready', not_before = 0, oom_attempts = 0, failure_class = NULL, error = NULL, memory = CASE WHEN CAST(:memory AS bigint) IS NULL THEN memory ELSE GREATEST(coalesce(memory, 0), CAST(:memory AS bigint)) END, updated_at = :now WHERE job_id = :job_id AND state = 'failed' AND (kind = 'task' OR deps <= 0) AND (CAST(:classes AS text) IS NULL OR failure_class IN (SELECT jsonb_array_elements_text(CAST(:classes AS jsonb)))) AND (CAST(:ids AS text) IS NULL OR id IN (SELECT CAST(value AS bigint) FROM jsonb_array_elements_text(CAST(:ids AS jsonb)) AS value)) AND (CAST(:memory_key AS text) IS NULL OR coalesce(memory_key, fn) = :memory_key);
