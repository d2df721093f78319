-- PostgreSQL's own text of the statements of sql/queries.sql where the dialects differ.

-- name: insert_result
-- A task's result (ON CONFLICT for INSERT OR IGNORE: a result is stored once).
INSERT INTO results (task_id, job_id, attempt_id, value, value_ref, kind, size)
VALUES (:task_id, :job_id, :attempt_id, :value, :value_ref, :kind, :size)
ON CONFLICT (task_id) DO NOTHING;

-- name: low_group
-- A job's lowest open group (see sql/queries.sql): the subquery has an alias.
SELECT MIN(g) FROM (
    SELECT MIN(grp) AS g FROM tasks WHERE state = 'pending' AND job_id = :job_id
    UNION ALL SELECT MIN(grp) AS g FROM tasks WHERE state = 'ready' AND job_id = :job_id
    UNION ALL SELECT MIN(grp) AS g FROM tasks WHERE state = 'queued' AND job_id = :job_id
    UNION ALL SELECT MIN(grp) AS g FROM tasks WHERE state = 'running' AND job_id = :job_id
) AS lows;

-- name: take_ready
-- Tasks of one job that may run now, in group order, within the open-group window; locked
-- FOR UPDATE SKIP LOCKED to the end of the claiming transaction (task_queued), so replicas
-- claiming at once take different tasks and never wait on each other. A row another
-- replica claimed and committed meanwhile is read again as it is now (no longer ready: not
-- returned).
SELECT id, job_id, grp, kind, replicate, fn, params, params_ref, payload, payload_ref, attempts,
       oom_attempts, retries, oom_retries, timeout, memory, memory_key, lock_key
FROM tasks
WHERE job_id = :job_id AND state = 'ready' AND not_before <= :now AND grp < :grp_limit
ORDER BY grp, id
LIMIT :limit
FOR UPDATE SKIP LOCKED;

-- name: read_ready
-- read_ready with jsonb_array_elements_text for json_each (no row lock: the scheduler that
-- reads owns the store alone).
SELECT id, job_id, grp, kind, replicate, fn, params, params_ref, payload, payload_ref, attempts,
       oom_attempts, retries, oom_retries, timeout, memory, memory_key, lock_key
FROM tasks
WHERE job_id = :job_id AND state = 'ready' AND not_before <= :now AND grp < :grp_limit
      AND id NOT IN (SELECT CAST(value AS bigint) FROM
          jsonb_array_elements_text(CAST(:held AS jsonb)) AS value)
ORDER BY grp, id
LIMIT :limit;
