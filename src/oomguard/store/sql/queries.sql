-- name: take_ready
-- Tasks of one job that may run now, in group order, within the open-group window.
SELECT id, job_id, grp, kind, replicate, fn, params, params_ref, payload, payload_ref, attempts,
       oom_attempts, retries, oom_retries, timeout, memory, memory_key, lock_key
FROM tasks
WHERE job_id = :job_id AND state = 'ready' AND not_before <= :now AND grp < :grp_limit
ORDER BY grp, id
LIMIT :limit;

-- name: mark_queued
UPDATE tasks SET state = 'queued', updated_at = :now WHERE id = :id AND state = 'ready';

-- name: insert_attempt
INSERT INTO attempts (id, task_id, n, scheduler_id, worker, pid, state, started_at, ended_at,
                      failure_class, admitted_bytes, limit_bytes, peak_bytes, evidence)
VALUES (:id, :task_id, :n, :scheduler_id, :worker, :pid, :state, :started_at, :ended_at,
        :failure_class, :admitted_bytes, :limit_bytes, :peak_bytes, :evidence);

-- name: end_attempt
UPDATE attempts SET state = :state, ended_at = :ended_at, failure_class = :failure_class,
                    peak_bytes = :peak_bytes, evidence = :evidence, pid = :pid,
                    worker = COALESCE(:worker, worker)
WHERE id = :id;

-- name: task_running
UPDATE tasks SET state = 'running', attempts = :n, updated_at = :now WHERE id = :task_id;

-- name: task_succeeded
UPDATE tasks SET state = 'succeeded', attempts = :n, failure_class = NULL, error = NULL,
                 updated_at = :now
WHERE id = :task_id AND state IN ('running', 'queued', 'ready');

-- name: insert_result
INSERT OR IGNORE INTO results (task_id, job_id, attempt_id, value, value_ref, kind, size)
VALUES (:task_id, :job_id, :attempt_id, :value, :value_ref, :kind, :size);

-- name: release_dependent
UPDATE tasks SET deps = deps - 1,
                 state = CASE WHEN deps - 1 <= 0 AND state = 'pending' THEN 'ready' ELSE state END,
                 updated_at = :now
WHERE job_id = :job_id AND grp = :grp AND kind = 'aggregate';

-- name: task_retry
UPDATE tasks SET state = 'ready', attempts = :n, oom_attempts = :oom_attempts,
                 memory = :memory, not_before = :not_before, failure_class = :failure_class,
                 error = :error, updated_at = :now
WHERE id = :task_id;

-- name: task_failed
UPDATE tasks SET state = 'failed', attempts = :n, oom_attempts = :oom_attempts,
                 failure_class = :failure_class, error = :error, updated_at = :now
WHERE id = :task_id;

-- name: fail_dependent
UPDATE tasks SET state = 'failed', failure_class = 'upstream_failed',
                 error = :error, updated_at = :now
WHERE job_id = :job_id AND grp = :grp AND kind = 'aggregate' AND state = 'pending';

-- name: insert_event
INSERT INTO events (ts, job_id, task_id, kind, data) VALUES (:ts, :job_id, :task_id, :kind, :data);

-- name: insert_outbox
INSERT INTO outbox (ts, kind, notice) VALUES (:ts, :kind, :notice);

-- name: release_lock
DELETE FROM locks WHERE attempt_id = :attempt_id;

-- name: acquire_lock
INSERT INTO locks (key, attempt_id, task_id) VALUES (:key, :attempt_id, :task_id);

-- name: task_requeued
UPDATE tasks SET state = 'queued', attempts = :n, updated_at = :now WHERE id = :task_id;
