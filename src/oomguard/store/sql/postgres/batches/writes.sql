-- The hot path's writes as one statement for many rows (PostgreSQL only).
--
-- Each statement here is named as the statement of sql/*.sql it stands for, and takes
-- the same parameters, each an array of the rows' values (CAST to its column's type): an
-- executemany of N rows is one statement executed once, not N (store/postgres/batch.py).
-- "key: p" names the parameter that finds an updated row: rows repeating a key run one by
-- one as before, so that the last write of a row wins, as in SQLite.

-- name: end_attempt
-- key: id
UPDATE attempts AS a
SET state = v.state, ended_at = v.ended_at, failure_class = v.failure_class,
    peak_bytes = v.peak_bytes, evidence = v.evidence, pid = v.pid,
    worker = COALESCE(v.worker, a.worker)
FROM unnest(CAST(:state AS text[]), CAST(:ended_at AS double precision[]),
            CAST(:failure_class AS text[]), CAST(:peak_bytes AS bigint[]),
            CAST(:evidence AS text[]), CAST(:pid AS bigint[]), CAST(:worker AS text[]),
            CAST(:id AS bigint[]))
     AS v(state, ended_at, failure_class, peak_bytes, evidence, pid, worker, id)
WHERE a.id = v.id;

-- name: insert_attempt
INSERT INTO attempts (id, task_id, n, scheduler_id, worker, pid, state, started_at, ended_at,
                      failure_class, admitted_bytes, limit_bytes, peak_bytes, evidence)
SELECT * FROM unnest(CAST(:id AS bigint[]), CAST(:task_id AS bigint[]), CAST(:n AS bigint[]),
                     CAST(:scheduler_id AS text[]), CAST(:worker AS text[]),
                     CAST(:pid AS bigint[]), CAST(:state AS text[]),
                     CAST(:started_at AS double precision[]),
                     CAST(:ended_at AS double precision[]), CAST(:failure_class AS text[]),
                     CAST(:admitted_bytes AS bigint[]), CAST(:limit_bytes AS bigint[]),
                     CAST(:peak_bytes AS bigint[]), CAST(:evidence AS text[]));

-- name: task_running
-- key: task_id
UPDATE tasks AS t SET state = 'running', attempts = v.n, updated_at = v.now
FROM unnest(CAST(:n AS bigint[]), CAST(:now AS double precision[]),
            CAST(:task_id AS bigint[])) AS v(n, now, task_id)
WHERE t.id = v.task_id AND t.state IN ('running', 'queued', 'ready');

-- name: task_succeeded
-- key: task_id
UPDATE tasks AS t SET state = 'succeeded', attempts = v.n, failure_class = NULL, error = NULL,
                      updated_at = v.now
FROM unnest(CAST(:n AS bigint[]), CAST(:now AS double precision[]),
            CAST(:task_id AS bigint[])) AS v(n, now, task_id)
WHERE t.id = v.task_id AND t.state IN ('running', 'queued', 'ready');

-- name: insert_result
INSERT INTO results (task_id, job_id, attempt_id, value, value_ref, kind, size)
SELECT * FROM unnest(CAST(:task_id AS bigint[]), CAST(:job_id AS text[]),
                     CAST(:attempt_id AS bigint[]), CAST(:value AS bytea[]),
                     CAST(:value_ref AS text[]), CAST(:kind AS text[]), CAST(:size AS bigint[]))
ON CONFLICT (task_id) DO NOTHING;

-- name: task_queued
-- key: 2
UPDATE tasks AS t SET state = 'queued', updated_at = v.now
FROM unnest(CAST(? AS double precision[]), CAST(? AS bigint[])) AS v(now, id)
WHERE t.id = v.id;

-- name: insert_task
-- The ids are given in the rows' order (WITH ORDINALITY ... ORDER BY), as one by one.
INSERT INTO tasks (job_id, grp, kind, replicate, fn, params, params_ref, payload, payload_ref,
                   state, deps, retries, oom_retries, timeout, memory, memory_key, lock_key,
                   updated_at)
SELECT job_id, grp, kind, replicate, fn, params, params_ref, payload, payload_ref, state, deps,
       retries, oom_retries, timeout, memory, memory_key, lock_key, updated_at
FROM unnest(CAST(? AS text[]), CAST(? AS bigint[]), CAST(? AS text[]), CAST(? AS bigint[]),
            CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS bytea[]),
            CAST(? AS text[]), CAST(? AS text[]), CAST(? AS bigint[]), CAST(? AS bigint[]),
            CAST(? AS bigint[]), CAST(? AS double precision[]), CAST(? AS bigint[]),
            CAST(? AS text[]), CAST(? AS text[]), CAST(? AS double precision[]))
     WITH ORDINALITY
     AS v(job_id, grp, kind, replicate, fn, params, params_ref, payload, payload_ref, state,
          deps, retries, oom_retries, timeout, memory, memory_key, lock_key, updated_at, ord)
ORDER BY ord;
