-- PostgreSQL's own text of the statements of sql/samples.sql where the dialects differ.

-- name: samples_available
-- Whether the store has the samples table.
SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema()
    AND table_name = 'samples';

-- name: sample_series
-- A job's samples in time order, every ?-th one (the subquery has an alias).
SELECT ts, budget_bytes, admitted_bytes, job_admitted_bytes, running, workers FROM (SELECT *,
    ROW_NUMBER() OVER (ORDER BY ts, id) - 1 AS rn FROM samples WHERE job_id = ?) AS numbered
    WHERE rn % ? = 0 OR rn = ? - 1 ORDER BY ts, id;

-- name: thin_samples
-- Delete every other one of a job's oldest ? samples (the subquery has an alias).
DELETE FROM samples WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY ts, id)
    AS rn FROM samples WHERE job_id = ?) AS numbered WHERE rn <= ? AND rn % 2 = 0);

-- name: throughput
-- A job's attempts ended per interval (FLOOR: SQLite's CAST truncates; counts with FILTER).
SELECT CAST(FLOOR((a.ended_at - ?) / ?) AS bigint) AS b,
    COUNT(*) FILTER (WHERE a.state = 'succeeded'), COUNT(*) FILTER (WHERE a.state = 'failed'),
    COUNT(*) FILTER (WHERE a.state = 'succeeded' OR (t.state = 'failed' AND a.id = (SELECT
    MAX(id) FROM attempts WHERE task_id = t.id))) FROM attempts a JOIN tasks t ON t.id =
    a.task_id WHERE t.job_id = ? AND a.ended_at IS NOT NULL GROUP BY b ORDER BY b;

-- name: memory_kills
-- A job's attempts that ran out of memory (failure class in the JSON list ?), in time order.
SELECT a.ended_at, a.failure_class, COALESCE(t.memory_key, t.fn), a.limit_bytes, a.peak_bytes,
    a.task_id, a.id, a.pid FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.job_id = ?
    AND a.failure_class IN (SELECT jsonb_array_elements_text(CAST(? AS jsonb))) AND a.ended_at
    IS NOT NULL ORDER BY a.ended_at LIMIT ?;
