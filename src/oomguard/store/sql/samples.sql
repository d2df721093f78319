-- The dashboard's time series (store/samples.py).

-- name: samples_available
-- Whether the store has the samples table.
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'samples';

-- name: insert_sample
-- One dashboard sample of a job (budget, admitted memory, running, workers).
INSERT INTO samples (job_id, ts, budget_bytes, admitted_bytes, job_admitted_bytes, running,
    workers) VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: sample_count
-- How many samples a job has.
SELECT COUNT(*) FROM samples WHERE job_id = ?;

-- name: sample_series
-- A job's samples in time order, every ?-th one (evenly thinned).
SELECT ts, budget_bytes, admitted_bytes, job_admitted_bytes, running, workers FROM (SELECT *,
    ROW_NUMBER() OVER (ORDER BY ts, id) - 1 AS rn FROM samples WHERE job_id = ?) WHERE rn % ? =
    0 OR rn = ? - 1 ORDER BY ts, id;

-- name: prune_samples
-- Delete samples taken before ?.
DELETE FROM samples WHERE ts < ?;

-- name: thin_samples
-- Delete every other one of a job's oldest ? samples.
DELETE FROM samples WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY ts, id)
    AS rn FROM samples WHERE job_id = ?) WHERE rn <= ? AND rn % 2 = 0);

-- name: attempts_span
-- When a job's first and last attempts ended.
SELECT MIN(a.ended_at), MAX(a.ended_at) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE
    t.job_id = ? AND a.ended_at IS NOT NULL;

-- name: throughput
-- A job's attempts ended per interval: succeeded, failed, tasks done.
SELECT CAST((a.ended_at - ?) / ? AS INTEGER) AS b, SUM(a.state = 'succeeded'), SUM(a.state = 'failed'), SUM(a.state = 'succeeded' OR (t.state = 'failed' AND a.id = (SELECT MAX(id) FROM attempts WHERE task_id = t.id))) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.job_id = ? AND a.ended_at IS NOT NULL GROUP BY b ORDER BY b;

-- name: memory_kills
-- A job's attempts that ran out of memory (failure class in the JSON list ?), in time order.
SELECT a.ended_at, a.failure_class, COALESCE(t.memory_key, t.fn), a.limit_bytes, a.peak_bytes,
    a.task_id, a.id, a.pid FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.job_id = ?
    AND a.failure_class IN (SELECT value FROM json_each(?)) AND a.ended_at IS NOT NULL ORDER BY
    a.ended_at LIMIT ?;
