-- The statements of the scheduler's hot path (store/sqlite.py, store/writes.py), by name.

-- name: take_ready
-- Tasks of one job that may run now, in group order, within the open-group window.
SELECT id, job_id, grp, kind, replicate, fn, params, params_ref, payload, payload_ref, attempts,
       oom_attempts, retries, oom_retries, timeout, memory, memory_key, lock_key
FROM tasks
WHERE job_id = :job_id AND state = 'ready' AND not_before <= :now AND grp < :grp_limit
ORDER BY grp, id
LIMIT :limit;

-- name: read_ready
-- take_ready for a scheduler that owns the store alone: the ready tasks that may run now and
-- are not among :held (the JSON list of those already in its window), in group order, left
-- ready (no claim to write: no other scheduler takes them; a dead one left nothing queued).
SELECT id, job_id, grp, kind, replicate, fn, params, params_ref, payload, payload_ref, attempts,
       oom_attempts, retries, oom_retries, timeout, memory, memory_key, lock_key
FROM tasks
WHERE job_id = :job_id AND state = 'ready' AND not_before <= :now AND grp < :grp_limit
      AND id NOT IN (SELECT value FROM json_each(:held))
ORDER BY grp, id
LIMIT :limit;

-- name: mark_queued
-- A ready task taken into the scheduler's window (state queued).
UPDATE tasks SET state = 'queued', updated_at = :now WHERE id = :id AND state = 'ready';

-- name: insert_attempt
-- An attempt as it starts (or, ended before its insert was committed, with its ending).
INSERT INTO attempts (id, task_id, n, scheduler_id, worker, pid, state, started_at, ended_at,
                      failure_class, admitted_bytes, limit_bytes, peak_bytes, evidence)
VALUES (:id, :task_id, :n, :scheduler_id, :worker, :pid, :state, :started_at, :ended_at,
        :failure_class, :admitted_bytes, :limit_bytes, :peak_bytes, :evidence);

-- name: insert_claim
-- An attempt as it starts, nothing of its ending known: insert_attempt with those columns
-- left NULL (each NULL bound costs the sqlite3 module an adapter lookup, about 0.4 us).
INSERT INTO attempts (id, task_id, n, scheduler_id, state, started_at, admitted_bytes,
                      limit_bytes)
VALUES (:id, :task_id, :n, :scheduler_id, 'running', :started_at, :admitted_bytes,
        :limit_bytes);

-- name: end_attempt
-- An attempt's ending: state, class, peak memory, evidence.
UPDATE attempts SET state = :state, ended_at = :ended_at, failure_class = :failure_class,
                    peak_bytes = :peak_bytes, evidence = :evidence, pid = :pid,
                    worker = COALESCE(:worker, worker)
WHERE id = :id;

-- name: task_running
-- A task's attempt :n started (a task cancelled meanwhile stays cancelled: its attempt is
-- stopped by the cancel check).
UPDATE tasks SET state = 'running', attempts = :n, updated_at = :now
WHERE id = :task_id AND (state = 'running' OR state = 'queued' OR state = 'ready');

-- name: task_succeeded
-- A task succeeded with attempt :n (its result stored in the same transaction). The states
-- are ORed, not an IN list: SQLite builds an IN list's table at each run, a third of the cost.
UPDATE tasks SET state = 'succeeded', attempts = :n, failure_class = NULL, error = NULL,
                 updated_at = :now
WHERE id = :task_id AND (state = 'running' OR state = 'queued' OR state = 'ready');

-- name: insert_result
-- A task's result (inline, or the name of its blob file).
INSERT OR IGNORE INTO results (task_id, job_id, attempt_id, value, value_ref, kind, size)
VALUES (:task_id, :job_id, :attempt_id, :value, :value_ref, :kind, :size);

-- name: release_dependent
-- A replicate of group :grp succeeded: its aggregation waits for one fewer (ready at none).
UPDATE tasks SET deps = deps - 1,
                 state = CASE WHEN deps - 1 <= 0 AND state = 'pending' THEN 'ready' ELSE state END,
                 updated_at = :now
WHERE job_id = :job_id AND grp = :grp AND kind = 'aggregate';

-- name: task_retry
-- A failed attempt is retried: the task is ready again after :not_before (unless it ended
-- meanwhile: a task cancelled, or its job stopped, while its attempt ran stays so).
UPDATE tasks SET state = 'ready', attempts = :n, oom_attempts = :oom_attempts,
                 memory = :memory, not_before = :not_before, failure_class = :failure_class,
                 error = :error, updated_at = :now
WHERE id = :task_id AND (state = 'running' OR state = 'queued' OR state = 'ready');

-- name: task_failed
-- A task failed for good with attempt :n (a task cancelled meanwhile stays cancelled).
UPDATE tasks SET state = 'failed', attempts = :n, oom_attempts = :oom_attempts,
                 failure_class = :failure_class, error = :error, updated_at = :now
WHERE id = :task_id AND (state = 'running' OR state = 'queued' OR state = 'ready');

-- name: fail_dependent
-- The aggregation of group :grp fails: a replicate it waited for failed for good.
UPDATE tasks SET state = 'failed', failure_class = 'upstream_failed',
                 error = :error, updated_at = :now
WHERE job_id = :job_id AND grp = :grp AND kind = 'aggregate' AND state = 'pending';

-- name: insert_event
-- An event of a job's history (job_id NULL: of the store).
INSERT INTO events (ts, job_id, task_id, kind, data) VALUES (:ts, :job_id, :task_id, :kind, :data);

-- name: insert_outbox
-- A notice for the webhooks, committed with what caused it.
INSERT INTO outbox (ts, kind, notice) VALUES (:ts, :kind, :notice);

-- name: release_lock
-- Release the lock held by attempt :attempt_id.
DELETE FROM locks WHERE attempt_id = :attempt_id;

-- name: acquire_lock
-- Attempt :attempt_id takes lock :key.
INSERT INTO locks (key, attempt_id, task_id) VALUES (:key, :attempt_id, :task_id);

-- name: task_requeued
-- A task handed back before its attempt started: ready again, its attempt count restored.
UPDATE tasks SET state = 'queued', attempts = :n, updated_at = :now
WHERE id = :task_id AND (state = 'running' OR state = 'queued' OR state = 'ready');

-- name: insert_task
-- A new task (every column of a submission's row; state 'pending' or 'ready').
INSERT INTO tasks (job_id, grp, kind, replicate, fn, params, params_ref, payload, payload_ref,
                   state, deps, retries, oom_retries, timeout, memory, memory_key, lock_key,
                   updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: low_group
-- A job's lowest open group: one indexed MIN per open state (an IN over the states would read
-- every open task of the job). Lists the open states of jobs/model.py OPEN_STATES one by one.
SELECT MIN(g) FROM (
    SELECT MIN(grp) AS g FROM tasks WHERE state = 'pending' AND job_id = :job_id
    UNION ALL SELECT MIN(grp) AS g FROM tasks WHERE state = 'ready' AND job_id = :job_id
    UNION ALL SELECT MIN(grp) AS g FROM tasks WHERE state = 'queued' AND job_id = :job_id
    UNION ALL SELECT MIN(grp) AS g FROM tasks WHERE state = 'running' AND job_id = :job_id
);
