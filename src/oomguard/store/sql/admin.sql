-- What users do to a store: retry, cancel, stop, reopen, forget; retention (store/admin.py).

-- name: set_meta
-- Set a meta key (application, schema_version, the store's name, ...).
INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?);

-- name: add_counter
-- Add to a store-wide counter, creating it at the delta.
INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value +
    excluded.value;

-- name: retry_failed_tasks
-- Make a job's failed tasks (and aggregations no replicate holds back) ready with fresh retry counts.
UPDATE tasks SET state = 'ready', not_before = 0, oom_attempts = 0, failure_class = NULL, error = NULL, updated_at = ? WHERE job_id = ? AND state = 'failed' AND (kind = 'task' OR deps <= 0);

-- name: retry_failed_aggregates
-- Aggregations that failed because a replicate did wait for it again (pending).
UPDATE tasks SET state = 'pending', failure_class = NULL, error = NULL, updated_at = ? WHERE job_id = ? AND state = 'failed' AND kind = 'aggregate';

-- name: cancel_tasks
-- Cancel a job's open tasks.
UPDATE tasks SET state = 'cancelled', updated_at = ? WHERE job_id = ? AND state IN {open_states};

-- name: cancel_job
-- Mark a job cancelled.
UPDATE jobs SET state = 'cancelled' WHERE id = ?;

-- name: stop_tasks
-- Cancel a stopped job's open tasks, saying why in their error.
UPDATE tasks SET state = 'cancelled', error = ?, updated_at = ? WHERE job_id = ? AND state IN
    {open_states};

-- name: stop_job
-- Mark a job stopped (unless it was cancelled).
UPDATE jobs SET state = 'stopped' WHERE id = ? AND state != 'cancelled';

-- name: reopen_tasks
-- A reopened job's cancelled and failed tasks: ready (pending for an aggregation still waiting), fresh retry counts.
UPDATE tasks SET state = CASE WHEN kind = 'aggregate' AND deps > 0 THEN 'pending' ELSE 'ready' END, not_before = 0, oom_attempts = 0, failure_class = NULL, error = NULL, updated_at = ? WHERE job_id = ? AND state IN ('cancelled', 'failed');

-- name: reopen_aggregates
-- A reopened job's aggregations wait again for their replicates not yet succeeded.
UPDATE tasks SET deps = (SELECT COUNT(*) FROM tasks r WHERE r.job_id = tasks.job_id AND r.grp = tasks.grp AND r.kind = 'task' AND r.state != 'succeeded'), state = CASE WHEN (SELECT COUNT(*) FROM tasks r WHERE r.job_id = tasks.job_id AND r.grp = tasks.grp AND r.kind = 'task' AND r.state != 'succeeded') > 0 THEN 'pending' ELSE 'ready' END WHERE job_id = ? AND kind = 'aggregate' AND state IN ('ready', 'pending');

-- name: reopen_job
-- Mark a stopped job open again.
UPDATE jobs SET state = 'open' WHERE id = ? AND state = 'stopped';

-- name: forget_chunk
-- Up to ? task ids of a job being forgotten (deleted a chunk per transaction).
SELECT id FROM tasks WHERE job_id = ? LIMIT ?;

-- name: forget_attempts
-- Delete the attempts of the tasks in the JSON list ?.
DELETE FROM attempts WHERE task_id IN (SELECT value FROM json_each(?));

-- name: forget_results
-- Delete the results of the tasks in the JSON list ?.
DELETE FROM results WHERE task_id IN (SELECT value FROM json_each(?));

-- name: forget_locks
-- Delete the locks held by the tasks in the JSON list ?.
DELETE FROM locks WHERE task_id IN (SELECT value FROM json_each(?));

-- name: forget_tasks
-- Delete the tasks in the JSON list ?.
DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?));

-- name: forget_job_events
-- Delete a forgotten job's events.
DELETE FROM events WHERE job_id = ?;

-- name: forget_job_parts
-- Delete a forgotten job's Parquet part rows.
DELETE FROM parts WHERE job_id = ?;

-- name: forget_job_samples
-- Delete a forgotten job's dashboard samples.
DELETE FROM samples WHERE job_id = ?;

-- name: forget_job_row
-- Delete a forgotten job's own row.
DELETE FROM jobs WHERE id = ?;

-- name: job_in_flight
-- A job's open tasks and running attempts (a job with either cannot be forgotten).
SELECT (SELECT COUNT(*) FROM tasks WHERE job_id = ? AND state IN {open_states}), (SELECT
    COUNT(*) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.job_id = ? AND a.state =
    'running');

-- name: expired_jobs
-- Finished jobs created before ? with no open task and no task changed since ?, oldest first.
SELECT j.id FROM jobs j WHERE j.state != 'open' AND j.created_at < ? AND NOT EXISTS (SELECT 1
    FROM tasks t WHERE t.job_id = j.id AND (t.state IN {open_states} OR t.updated_at >= ?))
    ORDER BY j.created_at LIMIT ?;

-- name: release_finished_locks
-- Delete the locks still held by tasks that are no longer open.
DELETE FROM locks WHERE task_id NOT IN (SELECT id FROM tasks WHERE state IN {open_states});

-- name: forget_old_events
-- Delete store-wide events (no job) older than ?.
DELETE FROM events WHERE job_id IS NULL AND ts < ?;

-- name: vacuum
-- Compact the store file.
VACUUM;

-- name: wal_checkpoint
-- Write the WAL back into the store file and truncate it (after VACUUM).
PRAGMA wal_checkpoint(TRUNCATE);

-- name: count_chosen_tasks
-- How many of a job's failed tasks a dashboard retry would touch: :classes (JSON list or NULL: any class), :ids (JSON list or NULL: any task), :memory_key (NULL: any key; a task without one is keyed by its function); with none of them, those retry_failed_tasks and retry_failed_aggregates touch.
SELECT count(*) FROM tasks WHERE job_id = :job_id AND state = 'failed' AND (kind = 'task' OR deps <= 0 OR (kind = 'aggregate' AND :classes IS NULL AND :ids IS NULL AND :memory_key IS NULL)) AND (:classes IS NULL OR failure_class IN (SELECT value FROM json_each(:classes))) AND (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids))) AND (:memory_key IS NULL OR coalesce(memory_key, fn) = :memory_key);

-- name: retry_chosen_tasks
-- Make the chosen failed tasks of a job ready with fresh retry counts (as retry_failed_tasks), their declared memory raised to at least :memory (NULL: kept).
UPDATE tasks SET state = 'ready', not_before = 0, oom_attempts = 0, failure_class = NULL, error = NULL, memory = CASE WHEN :memory IS NULL THEN memory ELSE max(coalesce(memory, 0), :memory) END, updated_at = :now WHERE job_id = :job_id AND state = 'failed' AND (kind = 'task' OR deps <= 0) AND (:classes IS NULL OR failure_class IN (SELECT value FROM json_each(:classes))) AND (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids))) AND (:memory_key IS NULL OR coalesce(memory_key, fn) = :memory_key);

-- name: count_open_tasks
-- How many of a job's tasks a cancel would touch (its open tasks).
SELECT count(*) FROM tasks WHERE job_id = ? AND state IN {open_states};
