-- PostgreSQL's own text of the statements of sql/dashboard.sql where the dialects differ.

-- name: dashboard_failures
-- A page of the tasks that failed for good (see sql/dashboard.sql): strpos for instr, the
-- JSON list read with jsonb_array_elements_text.
SELECT t.id, t.job_id, j.namespace, t.fn, t.failure_class, t.error, t.attempts, t.updated_at
FROM tasks t JOIN jobs j ON j.id = t.job_id
WHERE t.state = 'failed'
  AND (:namespaces IS NULL OR j.namespace IN (SELECT jsonb_array_elements_text(CAST(:namespaces AS jsonb))))
  AND (:namespace IS NULL OR j.namespace = :namespace)
  AND (:task IS NULL OR strpos(lower(t.fn), lower(:task)) > 0)
  AND (:failure_class IS NULL OR t.failure_class = :failure_class)
  AND (:error IS NULL OR strpos(lower(COALESCE(t.error, '')), lower(:error)) > 0)
  AND (:since IS NULL OR t.updated_at >= :since)
  AND (:until IS NULL OR t.updated_at < :until)
  AND (:before_ts IS NULL OR t.updated_at < :before_ts
       OR (t.updated_at = :before_ts AND t.id < :before_id))
ORDER BY t.updated_at DESC, t.id DESC
LIMIT :limit;

-- name: dashboard_open_work
-- Each job with tasks that may still run (see sql/dashboard.sql): counts with FILTER.
SELECT t.job_id, MIN(j.name), MIN(j.namespace),
    COUNT(*) FILTER (WHERE t.state = 'running'),
    COUNT(*) FILTER (WHERE t.state IN ('pending', 'ready', 'queued'))
FROM tasks t JOIN jobs j ON j.id = t.job_id
WHERE t.state IN {open_states}
  AND (:namespaces IS NULL OR j.namespace IN (SELECT jsonb_array_elements_text(CAST(:namespaces AS jsonb))))
GROUP BY t.job_id
ORDER BY 4 DESC, 5 DESC, t.job_id
LIMIT :limit;

-- name: dashboard_open_totals
-- The tasks running and waiting of every job (see sql/dashboard.sql): counts with FILTER.
SELECT COUNT(*) FILTER (WHERE t.state = 'running'),
    COUNT(*) FILTER (WHERE t.state IN ('pending', 'ready', 'queued')), COUNT(DISTINCT t.job_id)
FROM tasks t JOIN jobs j ON j.id = t.job_id
WHERE t.state IN {open_states}
  AND (:namespaces IS NULL OR j.namespace IN (SELECT jsonb_array_elements_text(CAST(:namespaces AS jsonb))));

-- name: dashboard_jobs
-- A page of jobs (see sql/dashboard.sql): strpos for instr, an alias for the subquery.
SELECT id, name, namespace, fn, created_at, shown FROM (
    SELECT j.id, j.name, j.namespace, j.fn, j.created_at,
        CASE
            WHEN j.state = 'cancelled' THEN 'cancelled'
            WHEN j.state = 'stopped' THEN 'failed'
            WHEN j.state = 'open' OR EXISTS (SELECT 1 FROM tasks t
                    WHERE t.state IN {open_states} AND t.job_id = j.id) THEN
                CASE WHEN EXISTS (SELECT 1 FROM tasks t
                        WHERE t.state IN ('running', 'succeeded', 'failed') AND t.job_id = j.id)
                    THEN 'running' ELSE 'waiting' END
            WHEN EXISTS (SELECT 1 FROM tasks t WHERE t.state = 'failed' AND t.job_id = j.id)
                THEN 'failed'
            ELSE 'succeeded'
        END AS shown
    FROM jobs j
    WHERE (:namespaces IS NULL OR j.namespace IN (SELECT jsonb_array_elements_text(CAST(:namespaces AS jsonb))))
      AND (:namespace IS NULL OR j.namespace = :namespace)
      AND (:task IS NULL OR strpos(lower(j.fn), lower(:task)) > 0
           OR strpos(lower(j.name), lower(:task)) > 0)
      AND (:since IS NULL OR j.created_at >= :since)
      AND (:until IS NULL OR j.created_at < :until)
      AND (:before_ts IS NULL OR j.created_at < :before_ts
           OR (j.created_at = :before_ts AND j.id < :before_id))
      AND (:failure_class IS NULL OR EXISTS (SELECT 1 FROM tasks t
               WHERE t.state = 'failed' AND t.job_id = j.id
                 AND t.failure_class = :failure_class))
      AND (:error IS NULL OR EXISTS (SELECT 1 FROM tasks t
               WHERE t.state = 'failed' AND t.job_id = j.id
                 AND strpos(lower(COALESCE(t.error, '')), lower(:error)) > 0))
) AS listed
WHERE :state IS NULL OR shown = :state
ORDER BY created_at DESC, id DESC
LIMIT :limit;
