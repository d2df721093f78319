-- PostgreSQL's own text of the statements of sql/views.sql where the dialects differ.

-- name: recent_jobs_in_namespaces
-- The newest ? jobs of the namespaces in the JSON list ?.
SELECT id, name, namespace, fn, state, created_at FROM jobs WHERE namespace IN (SELECT
    jsonb_array_elements_text(CAST(? AS jsonb))) ORDER BY created_at DESC LIMIT ?;

-- name: task_states_in_namespaces
-- The tasks of the jobs of the namespaces in the JSON list ?, by state.
SELECT state, COUNT(*) FROM tasks WHERE job_id IN (SELECT id FROM jobs WHERE namespace IN
    (SELECT jsonb_array_elements_text(CAST(? AS jsonb)))) GROUP BY state;

-- name: task_list
-- A page of a job's tasks (see sql/views.sql): :params read as a boolean.
SELECT id, grp, kind, replicate, fn, state, attempts, failure_class, error,
       CASE WHEN CAST(:params AS boolean) THEN params END,
       CASE WHEN CAST(:params AS boolean) THEN CAST(params_ref IS NOT NULL AS integer) ELSE 0 END
FROM tasks
WHERE job_id = :job_id AND id > COALESCE(:after, 0)
  AND (:failure_class IS NULL OR failure_class = :failure_class)
ORDER BY id LIMIT :limit;

-- name: task_list_in_state
-- task_list of the tasks in state :state (see sql/views.sql).
SELECT id, grp, kind, replicate, fn, state, attempts, failure_class, error,
       CASE WHEN CAST(:params AS boolean) THEN params END,
       CASE WHEN CAST(:params AS boolean) THEN CAST(params_ref IS NOT NULL AS integer) ELSE 0 END
FROM tasks
WHERE state = :state AND job_id = :job_id AND id > COALESCE(:after, 0)
  AND (:failure_class IS NULL OR failure_class = :failure_class)
ORDER BY id LIMIT :limit;

-- name: failed_tasks
-- Up to ? (negative: all) of a job's tasks that failed for good (LIMIT NULL: all).
SELECT id, grp, kind, replicate, fn, params, params_ref, failure_class, error, attempts,
    memory_key FROM tasks WHERE job_id = ? AND state = 'failed' ORDER BY id
    LIMIT NULLIF(GREATEST(?, -1), -1);

-- name: job_times
-- When a job's first attempt started, its last ended, and how many run.
SELECT MIN(a.started_at), MAX(a.ended_at), COUNT(*) FILTER (WHERE a.state = 'running') FROM
    attempts a JOIN tasks t ON t.id = a.task_id WHERE t.job_id = ?;

-- name: task
-- One task, for users (whether its params are in a blob, as 0 or 1).
SELECT id, job_id, grp, kind, replicate, fn, state, attempts, failure_class, error, memory_key,
    memory, params, CAST(params_ref IS NOT NULL AS integer) FROM tasks WHERE id = ?;
