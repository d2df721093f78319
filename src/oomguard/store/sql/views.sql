-- What users read: counts, failures, attempts, results, listings (store/views.py).

-- name: job
-- A job's row.
SELECT id, name, namespace, fn, agg, spec, state, created_at, total_groups FROM jobs WHERE id =
    ?;

-- name: job_ids
-- Every job id, oldest first.
SELECT id FROM jobs ORDER BY created_at;

-- name: stop_cause
-- A job's state and the data of its last job_stopped event.
SELECT j.state, (SELECT data FROM events WHERE job_id = j.id AND kind = 'job_stopped' ORDER BY
    id DESC LIMIT 1) FROM jobs j WHERE j.id = ?;

-- name: task_counts
-- A job's tasks by state (one index seek per state).
SELECT state, COUNT(*) FROM tasks WHERE state IN {all_states} AND job_id = ? GROUP BY state;

-- name: recent_jobs
-- The newest ? jobs.
SELECT id, name, namespace, fn, state, created_at FROM jobs ORDER BY created_at DESC LIMIT ?;

-- name: recent_jobs_in_namespaces
-- The newest ? jobs of the namespaces in the JSON list ?.
SELECT id, name, namespace, fn, state, created_at FROM jobs WHERE namespace IN (SELECT value
    FROM json_each(?)) ORDER BY created_at DESC LIMIT ?;

-- name: task_list
-- A page of a job's tasks in id order after task :after (none: from the first), of one failure
-- class (none: any); their params only when :params (else NULL, 0).
SELECT id, grp, kind, replicate, fn, state, attempts, failure_class, error,
       CASE WHEN :params THEN params END, CASE WHEN :params THEN params_ref IS NOT NULL ELSE 0 END
FROM tasks
WHERE job_id = :job_id AND id > COALESCE(:after, 0)
  AND (:failure_class IS NULL OR failure_class = :failure_class)
ORDER BY id LIMIT :limit;

-- name: task_list_in_state
-- task_list of the tasks in state :state (the index tasks_state answers it).
SELECT id, grp, kind, replicate, fn, state, attempts, failure_class, error,
       CASE WHEN :params THEN params END, CASE WHEN :params THEN params_ref IS NOT NULL ELSE 0 END
FROM tasks
WHERE state = :state AND job_id = :job_id AND id > COALESCE(:after, 0)
  AND (:failure_class IS NULL OR failure_class = :failure_class)
ORDER BY id LIMIT :limit;

-- name: open_tasks_by_job
-- Open tasks by job (the index tasks_state reads only open tasks).
SELECT job_id, COUNT(*) FROM tasks WHERE state IN {open_states} GROUP BY job_id;

-- name: job_namespace
-- A job's namespace.
SELECT namespace FROM jobs WHERE id = ?;

-- name: task_states
-- Every task by state.
SELECT state, COUNT(*) FROM tasks GROUP BY state;

-- name: task_states_in_namespaces
-- The tasks of the jobs of the namespaces in the JSON list ?, by state.
SELECT state, COUNT(*) FROM tasks WHERE job_id IN (SELECT id FROM jobs WHERE namespace IN
    (SELECT value FROM json_each(?))) GROUP BY state;

-- name: failed_tasks_by_class
-- Tasks failed for good, by (final class, function).
SELECT COALESCE(failure_class, 'unknown'), fn, COUNT(*) FROM tasks WHERE state = 'failed' GROUP BY 1, 2;

-- name: ended_attempts_upper
-- The oldest running attempt's id and the newest attempt's id.
SELECT (SELECT MIN(id) FROM attempts WHERE state = 'running'), (SELECT MAX(id) FROM attempts);

-- name: attempt_failures_between
-- Failed attempts with ? < id <= ?, by (class, function).
SELECT a.failure_class, t.fn, COUNT(*) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE
    a.id > ? AND a.id <= ? AND a.failure_class IS NOT NULL GROUP BY a.failure_class, t.fn;

-- name: live_scheduler
-- Whether a scheduler has a heartbeat newer than ?.
SELECT 1 FROM schedulers WHERE stopped_at IS NULL AND heartbeat > ? LIMIT 1;

-- name: job_has_unended_attempts
-- Whether a job has attempts interrupted or still running.
SELECT 1 FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.job_id = ? AND a.state IN ('interrupted', 'running') LIMIT 1;

-- name: failures_by_class
-- A job's failed attempts by failure class.
SELECT a.failure_class, COUNT(*) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.job_id
    = ? AND a.failure_class IS NOT NULL GROUP BY a.failure_class;

-- name: failed_tasks
-- Up to ? (negative: all) of a job's tasks that failed for good.
SELECT id, grp, kind, replicate, fn, params, params_ref, failure_class, error, attempts,
    memory_key FROM tasks WHERE job_id = ? AND state = 'failed' ORDER BY id LIMIT ?;

-- name: job_times
-- When a job's first attempt started, its last ended, and how many run.
SELECT MIN(a.started_at), MAX(a.ended_at), SUM(a.state = 'running') FROM attempts a JOIN tasks t
    ON t.id = a.task_id WHERE t.job_id = ?;

-- name: job_estimates
-- The estimates of the memory keys a job's tasks use.
SELECT memory_key, bytes, peak_bytes, samples, updated_at, killed_at, unfit_cap FROM estimates
    WHERE memory_key IN (SELECT DISTINCT COALESCE(memory_key, fn) FROM tasks WHERE job_id = ?);

-- name: task
-- One task, for users.
SELECT id, job_id, grp, kind, replicate, fn, state, attempts, failure_class, error, memory_key,
    memory, params, params_ref IS NOT NULL FROM tasks WHERE id = ?;

-- name: task_attempts
-- A task's attempts in order.
SELECT id, n, worker, pid, state, started_at, ended_at, failure_class, admitted_bytes,
    limit_bytes, peak_bytes, evidence FROM attempts WHERE task_id = ? ORDER BY id;

-- name: all_attempts
-- Every attempt of a job, with its memory key (the dashboard's timeline).
SELECT a.id, a.task_id, a.started_at, a.ended_at, a.admitted_bytes, a.limit_bytes, a.peak_bytes,
    a.failure_class, a.state, t.memory_key FROM attempts a JOIN tasks t ON t.id = a.task_id
    WHERE t.job_id = ? ORDER BY a.id;

-- name: group_results
-- The stored results of a group's replicates by replicate, with the attempt that stored each.
SELECT r.attempt_id, r.value, r.value_ref FROM results r JOIN tasks t ON t.id = r.task_id WHERE
    t.job_id = ? AND t.grp = ? AND t.kind = 'task' ORDER BY t.replicate;

-- name: result_rows
-- A job's stored results of a kind with their tasks' params, in task order.
SELECT t.id, t.grp, t.replicate, t.params, t.params_ref, t.attempts, r.value, r.value_ref FROM
    results r JOIN tasks t ON t.id = r.task_id WHERE r.job_id = ? AND r.kind = ? ORDER BY t.id;

-- name: result_rows_of_part
-- result_rows of the results assigned to Parquet part ?.
SELECT t.id, t.grp, t.replicate, t.params, t.params_ref, t.attempts, r.value, r.value_ref FROM
    results r JOIN tasks t ON t.id = r.task_id WHERE r.job_id = ? AND r.kind = ? AND r.part = ?
    ORDER BY t.id;

-- name: events
-- A job's newest ? events.
SELECT id, ts, task_id, kind, data FROM events WHERE job_id = ? ORDER BY id DESC LIMIT ?;

-- name: unwritten_parts
-- A job's results not yet in a Parquet part plus its parts not yet written.
SELECT (SELECT COUNT(*) FROM results WHERE job_id = ? AND part IS NULL) + (SELECT COUNT(*) FROM
    parts WHERE job_id = ? AND written = 0);

-- name: meta
-- A meta key's value.
SELECT value FROM meta WHERE key = ?;

-- name: counter
-- A counter's value.
SELECT value FROM counters WHERE name = ?;
