-- What the dashboard's own pages read (store/dashboard.py): a task's retry lineage and the
-- learned estimate of its memory key.

-- name: dashboard_lineage
-- A task's attempts in order, each with what it was given and what it used.
SELECT id, n, worker, pid, state, started_at, ended_at, failure_class, admitted_bytes,
    limit_bytes, peak_bytes FROM attempts WHERE task_id = ? ORDER BY id;

-- name: dashboard_key_estimate
-- The learned estimate of one memory key (no row: nothing learned yet).
SELECT bytes, peak_bytes, samples, updated_at, killed_at, unfit_cap FROM estimates
    WHERE memory_key = ?;
