-- PostgreSQL's own text of the statements of sql/jobs.sql where the dialects differ.

-- name: count_duplicate_results
-- Add to the counter of late duplicate results discarded (the column qualified).
INSERT INTO counters (name, value) VALUES ('duplicate_results', ?) ON CONFLICT (name) DO UPDATE
    SET value = counters.value + excluded.value;

-- name: stored_results_among
-- Which of the tasks in the JSON list ? have a stored result.
SELECT task_id FROM results WHERE task_id IN (SELECT CAST(value AS bigint) FROM
    jsonb_array_elements_text(CAST(? AS jsonb)) AS value);

-- name: cancelled_among
-- Which of the tasks in the JSON list ? are cancelled.
SELECT id FROM tasks WHERE state = 'cancelled' AND id IN (SELECT CAST(value AS bigint) FROM
    jsonb_array_elements_text(CAST(? AS jsonb)) AS value);

-- name: lock_quotas
-- Submissions' quota checks one at a time (one lock per store: it covers the namespaces'
-- quotas too): under READ COMMITTED two submissions would both count before either inserts
-- its job. Held to the end of the transaction, which inserts the job that reserves.
SELECT pg_advisory_xact_lock(7467839);

-- name: pending_tasks
-- Tasks pending in the whole store and the room open submissions hold (GREATEST for MAX).
SELECT (SELECT COUNT(*) FROM tasks WHERE state IN {open_states})
     + (SELECT COALESCE(SUM(GREATEST(j.reserved - (SELECT COUNT(*) FROM tasks t
                                                    WHERE t.job_id = j.id), 0)), 0)
        FROM jobs j WHERE j.state = 'open' AND j.reserved > 0 AND j.created_at > :since);

-- name: namespace_pending_tasks
-- pending_tasks of namespace :ns alone (GREATEST for MAX).
SELECT (SELECT COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id
        WHERE t.state IN {open_states} AND j.namespace = :ns)
     + (SELECT COALESCE(SUM(GREATEST(j.reserved - (SELECT COUNT(*) FROM tasks t
                                                    WHERE t.job_id = j.id), 0)), 0)
        FROM jobs j WHERE j.state = 'open' AND j.reserved > 0 AND j.created_at > :since
        AND j.namespace = :ns);

-- name: task_queued
-- Tasks :ids taken into the window of scheduler :owner (jsonb_array_elements_text for
-- json_each); take_ready locked them FOR UPDATE SKIP LOCKED in this transaction, and the
-- state test keeps a claim single.
UPDATE tasks SET state = 'queued', owner = :owner, updated_at = :now
WHERE id IN (SELECT CAST(value AS bigint) FROM jsonb_array_elements_text(CAST(:ids AS jsonb))
    AS value) AND state = 'ready' RETURNING id;

-- name: active_namespaces
-- active_namespaces with jsonb_array_elements_text for json_each.
SELECT DISTINCT j.namespace FROM jobs j
WHERE j.namespace NOT IN (SELECT value FROM jsonb_array_elements_text(CAST(:quoted AS jsonb))
    AS value)
    AND ((j.state = 'open' AND j.reserved > 0 AND j.created_at > :since)
         OR EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id AND t.state IN {open_states}));
