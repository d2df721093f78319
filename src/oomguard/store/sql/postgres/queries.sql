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
