-- What the dashboard's own pages read (store/dashboard.py): a task's retry lineage and the
-- learned estimate of its memory key.

-- name: dashboard_lineage
-- A task's attempts in order, each with what it was given and what it used.
SELECT id, n, worker, pid, state, started_at, ended_at, failure_class, admitted_bytes,
    limit_bytes, peak_bytes FROM attempts WHERE task_id = ? ORDER BY id;

-- name: dashboard_key_estimate
-- The learned estimate of one memory key (no row: nothing learned yet).
SELECT bytes, peak_bytes, samples, updated_at, killed_at, unfit_cap FROM estimates
    WHERE memory_key = ?;

-- name: dashboard_failures
-- A page of the tasks that failed for good, newest first, of the namespaces in the JSON list
-- :namespaces (NULL: all), filtered (each NULL: any) by namespace, task (a part of its
-- function, any case), failure class, error text (a part, any case) and the time it ended
-- (:since inclusive, :until exclusive); after the cursor (:before_ts, :before_id) of the
-- previous page's last row.
SELECT t.id, t.job_id, j.namespace, t.fn, t.failure_class, t.error, t.attempts, t.updated_at
FROM tasks t JOIN jobs j ON j.id = t.job_id
WHERE t.state = 'failed'
  AND (:namespaces IS NULL OR j.namespace IN (SELECT value FROM json_each(:namespaces)))
  AND (:namespace IS NULL OR j.namespace = :namespace)
  AND (:task IS NULL OR instr(lower(t.fn), lower(:task)) > 0)
  AND (:failure_class IS NULL OR t.failure_class = :failure_class)
  AND (:error IS NULL OR instr(lower(COALESCE(t.error, '')), lower(:error)) > 0)
  AND (:since IS NULL OR t.updated_at >= :since)
  AND (:until IS NULL OR t.updated_at < :until)
  AND (:before_ts IS NULL OR t.updated_at < :before_ts
       OR (t.updated_at = :before_ts AND t.id < :before_id))
ORDER BY t.updated_at DESC, t.id DESC
LIMIT :limit;

-- name: dashboard_open_work
-- Each job with tasks that may still run, of the namespaces in the JSON list :namespaces
-- (NULL: all): its tasks running and waiting (pending, ready, queued), most running first;
-- the first :limit.
SELECT t.job_id, j.name, j.namespace,
    SUM(t.state = 'running'), SUM(t.state IN ('pending', 'ready', 'queued'))
FROM tasks t JOIN jobs j ON j.id = t.job_id
WHERE t.state IN {open_states}
  AND (:namespaces IS NULL OR j.namespace IN (SELECT value FROM json_each(:namespaces)))
GROUP BY t.job_id
ORDER BY 4 DESC, 5 DESC, t.job_id
LIMIT :limit;

-- name: dashboard_open_totals
-- The tasks running and waiting (pending, ready, queued) of every job of the namespaces in
-- the JSON list :namespaces (NULL: all), and how many jobs have any.
SELECT COALESCE(SUM(t.state = 'running'), 0),
    COALESCE(SUM(t.state IN ('pending', 'ready', 'queued')), 0), COUNT(DISTINCT t.job_id)
FROM tasks t JOIN jobs j ON j.id = t.job_id
WHERE t.state IN {open_states}
  AND (:namespaces IS NULL OR j.namespace IN (SELECT value FROM json_each(:namespaces)));

-- name: dashboard_last_sample
-- The scheduler's latest sample of the memory it hands out (any job's): when, the budget,
-- and what is admitted to every attempt in flight.
SELECT ts, budget_bytes, admitted_bytes FROM samples ORDER BY ts DESC LIMIT 1;

-- name: dashboard_job_last_sample
-- A job's latest sample: when, the memory admitted to its attempts, and how many ran.
SELECT ts, job_admitted_bytes, running FROM samples WHERE job_id = ? ORDER BY ts DESC LIMIT 1;

-- name: dashboard_jobs
-- A page of jobs, newest first, of the namespaces in the JSON list :namespaces (NULL: all),
-- filtered (each NULL: any) by namespace, task (a part of the job's function or name, any
-- case), state as users see it (running, waiting, succeeded, failed, cancelled), a failure
-- class or error text (a part, any case) of one of its tasks, and when it was created
-- (:since inclusive, :until exclusive); after the cursor (:before_ts, :before_id) of the
-- previous page's last row. Each row with its state as users see it.
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
    WHERE (:namespaces IS NULL OR j.namespace IN (SELECT value FROM json_each(:namespaces)))
      AND (:namespace IS NULL OR j.namespace = :namespace)
      AND (:task IS NULL OR instr(lower(j.fn), lower(:task)) > 0
           OR instr(lower(j.name), lower(:task)) > 0)
      AND (:since IS NULL OR j.created_at >= :since)
      AND (:until IS NULL OR j.created_at < :until)
      AND (:before_ts IS NULL OR j.created_at < :before_ts
           OR (j.created_at = :before_ts AND j.id < :before_id))
      AND (:failure_class IS NULL OR EXISTS (SELECT 1 FROM tasks t
               WHERE t.state = 'failed' AND t.job_id = j.id
                 AND t.failure_class = :failure_class))
      AND (:error IS NULL OR EXISTS (SELECT 1 FROM tasks t
               WHERE t.state = 'failed' AND t.job_id = j.id
                 AND instr(lower(COALESCE(t.error, '')), lower(:error)) > 0))
)
WHERE :state IS NULL OR shown = :state
ORDER BY created_at DESC, id DESC
LIMIT :limit;
