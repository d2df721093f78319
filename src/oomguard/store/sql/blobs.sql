-- Which blob files the rows refer to (store/blobs.py).

-- name: referenced_blobs
-- Every blob name a row refers to (params, payloads, results): what garbage collection keeps.
SELECT params_ref FROM tasks WHERE params_ref IS NOT NULL UNION SELECT payload_ref FROM tasks
    WHERE payload_ref IS NOT NULL UNION SELECT value_ref FROM results WHERE value_ref IS NOT
    NULL;

-- name: blob_referenced
-- Whether any row refers to blob ? (params, payload or result).
SELECT 1 FROM tasks WHERE params_ref = ? OR payload_ref = ? UNION ALL SELECT 1 FROM results
    WHERE value_ref = ? LIMIT 1;
