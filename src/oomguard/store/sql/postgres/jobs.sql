-- PostgreSQL's own text of the statements of sql/jobs.sql where the dialects differ.

-- name: count_duplicate_results
-- Add to the counter of late duplicate results discarded (the column qualified).
INSERT INTO counters (name, value) VALUES ('duplicate_results', ?) ON CONFLICT (name) DO UPDATE
    SET value = counters.value + excluded.value;

-- name: stored_results_among
-- Which of the tasks in the JSON list ? have a stored result.
SELECT task_id FROM results WHERE task_id IN (SELECT CAST(value AS bigint) FROM
    jsonb_array_elements_text(CAST(? AS jsonb)) AS value);

-- name: cancelled_among
-- Which of the tasks in the JSON list ? are cancelled.
SELECT id FROM tasks WHERE state = 'cancelled' AND id IN (SELECT CAST(value AS bigint) FROM
    jsonb_array_elements_text(CAST(? AS jsonb)) AS value);
