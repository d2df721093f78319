-- Which stored results are in which Parquet part (store/parts.py).

-- name: unwritten_parts_all
-- Parquet parts assigned but not yet written, in every job: (job, kind, n, out).
SELECT job_id, kind, n, out FROM parts WHERE written = 0;

-- name: job_specs
-- Every job's id and spec (the spec says where its Parquet output goes).
SELECT id, spec FROM jobs;

-- name: job_spec
-- A job's id and spec (the spec says where its Parquet output goes).
SELECT id, spec FROM jobs WHERE id = ?;

-- name: results_unassigned
-- A job's stored results not yet in a Parquet part, by kind: count and bytes.
SELECT kind, COUNT(*), SUM(COALESCE(size, LENGTH(value), 0)) FROM results WHERE job_id = ? AND
    part IS NULL GROUP BY kind;

-- name: last_part
-- The number of a job's last Parquet part of a kind (0: none yet).
SELECT COALESCE(MAX(n), 0) FROM parts WHERE job_id = ? AND kind = ?;

-- name: results_for_part
-- Up to ? of a job's results of a kind not yet in a part, oldest first, with their sizes.
SELECT task_id, COALESCE(size, LENGTH(value), 0) FROM results WHERE job_id = ? AND kind = ? AND
    part IS NULL ORDER BY task_id LIMIT ?;

-- name: insert_part
-- A Parquet part of a job, assigned and not yet written.
INSERT INTO parts (job_id, kind, n, out) VALUES (?, ?, ?, ?);

-- name: result_part
-- Assign a result to a Parquet part.
UPDATE results SET part = ? WHERE task_id = ?;

-- name: part_written
-- A Parquet part's file was renamed into place.
UPDATE parts SET written = 1 WHERE job_id = ? AND kind = ? AND n = ?;

-- name: has_replicates
-- Whether a job's tasks are numbered replicates.
SELECT 1 FROM tasks WHERE job_id = ? AND kind = 'task' AND replicate IS NOT NULL LIMIT 1;
