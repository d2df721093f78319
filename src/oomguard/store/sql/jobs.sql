-- Jobs and tasks: creating, finding, filling and taking them (store/sqlite.py), by name.

-- name: next_attempt_id
-- The highest attempt id so far (0: none).
SELECT COALESCE(MAX(id), 0) FROM attempts;

-- name: create_job
-- A new job row (reserved: the tasks its submission holds room for until they are written).
INSERT INTO jobs (id, name, namespace, fn, agg, spec, fingerprint, created_at, reserved) VALUES
    (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: lock_quotas
-- Serialize the quota checks of submissions (count, then insert the job that reserves):
-- nothing on SQLite (its IMMEDIATE transaction already does); on PostgreSQL
-- pg_advisory_xact_lock(<oomguard quotas>), held to the end of the transaction.
SELECT 'lock_quotas';

-- name: pending_tasks
-- Tasks pending in the whole store (every scheduler's, replicas' too): the open tasks, and
-- what the submissions still being written (open jobs created since :since) hold room for
-- but have not written yet. Counted in the transaction that inserts a submission's job, so
-- count and reservation are one step. PostgreSQL: take pg_advisory_xact_lock(<quota>) first
-- (a lock per store, or per namespace), as under READ COMMITTED two submissions would both
-- count before either inserts; MAX(a, b) there is GREATEST(a, b).
SELECT (SELECT COUNT(*) FROM tasks WHERE state IN {open_states})
     + (SELECT COALESCE(SUM(MAX(j.reserved - (SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.id),
                                0)), 0)
        FROM jobs j WHERE j.state = 'open' AND j.reserved > 0 AND j.created_at > :since);

-- name: active_namespaces
-- The namespaces with pending tasks in the whole store (open tasks, or room a submission
-- still being written holds), but those in :quoted (a JSON list: namespaces with a quota of
-- their own): what --max-namespaces counts. PostgreSQL: under lock_quotas, as pending_tasks.
SELECT DISTINCT j.namespace FROM jobs j
WHERE j.namespace NOT IN (SELECT value FROM json_each(:quoted))
    AND ((j.state = 'open' AND j.reserved > 0 AND j.created_at > :since)
         OR EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id AND t.state IN {open_states}));

-- name: namespace_pending_tasks
-- pending_tasks of namespace :ns alone (the same lock on PostgreSQL).
SELECT (SELECT COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id
        WHERE t.state IN {open_states} AND j.namespace = :ns)
     + (SELECT COALESCE(SUM(MAX(j.reserved - (SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.id),
                                0)), 0)
        FROM jobs j WHERE j.state = 'open' AND j.reserved > 0 AND j.created_at > :since
        AND j.namespace = :ns);

-- name: find_job
-- The job submitted with this fingerprint (a resubmission resumes it).
SELECT id FROM jobs WHERE fingerprint = ?;

-- name: job_id_exact
-- A job id, if it exists.
SELECT id FROM jobs WHERE id = ?;

-- name: newest_job
-- The newest job's id.
SELECT id FROM jobs ORDER BY created_at DESC LIMIT 1;

-- name: job_ids_by_prefix
-- Job ids equal to ? or starting with prefix ? (a LIKE pattern).
SELECT id FROM jobs WHERE id = ? OR id LIKE ? ORDER BY id;

-- name: set_total_groups
-- The number of groups a job's submission has inserted so far.
UPDATE jobs SET total_groups = ? WHERE id = ?;

-- name: seal_job
-- A job's number of groups, and sealed when ? (no more tasks come), unless cancelled or stopped.
UPDATE jobs SET total_groups = ?, state = CASE WHEN state IN ('cancelled', 'stopped') THEN state WHEN ? THEN 'sealed' ELSE state END WHERE id = ?;

-- name: job_groups
-- A job's number of groups and its state.
SELECT total_groups, state FROM jobs WHERE id = ?;

-- name: active_jobs
-- Jobs with open tasks, oldest first.
SELECT j.id FROM jobs j WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id AND t.state IN
    {open_states}) ORDER BY j.created_at;

-- name: task_queued
-- Tasks :ids taken into the window of scheduler :owner (state queued, the scheduler its owner), in the
-- transaction that read it ready. PostgreSQL: take_ready's SELECT adds FOR UPDATE SKIP LOCKED,
-- so replicas claiming at once take different tasks; the state test keeps a claim single (only
-- the tasks returned were claimed).
UPDATE tasks SET state = 'queued', owner = :owner, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'ready' RETURNING id;

-- name: next_not_before
-- When a job's earliest ready task may run (its retry back-off).
SELECT MIN(not_before) FROM tasks WHERE state = 'ready' AND job_id = ?;

-- name: group_params
-- The params of a group (those of its first replicate).
SELECT params, params_ref FROM tasks WHERE job_id = ? AND grp = ? AND kind = 'task' LIMIT 1;

-- name: group_values
-- The stored results of a group's replicates, by replicate.
SELECT r.value, r.value_ref FROM results r JOIN tasks t ON t.id = r.task_id WHERE t.job_id = ?
    AND t.grp = ? AND t.kind = 'task' ORDER BY t.replicate;

-- name: count_duplicate_results
-- Add to the counter of late duplicate results discarded.
INSERT INTO counters (name, value) VALUES ('duplicate_results', ?) ON CONFLICT(name) DO UPDATE
    SET value = value + excluded.value;

-- name: stored_results_among
-- Which of the tasks in the JSON list ? have a stored result.
SELECT task_id FROM results WHERE task_id IN (SELECT value FROM json_each(?));

-- name: job_aggregation
-- A job's aggregation (NULL: none).
SELECT agg FROM jobs WHERE id = ?;

-- name: task_place
-- A task's job, group and kind.
SELECT job_id, grp, kind FROM tasks WHERE id = ?;

-- name: task_state
-- A task's state.
SELECT state FROM tasks WHERE id = ?;

-- name: cancelled_among
-- Which of the tasks in the JSON list ? are cancelled.
SELECT id FROM tasks WHERE state = 'cancelled' AND id IN (SELECT value FROM json_each(?));
