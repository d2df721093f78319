-- PostgreSQL's own text of the statements of sql/leases.sql where the dialects differ.

-- name: lock_leases
-- Registering and taking over, one scheduler at a time: two replicas registering at once
-- see each other, two replicas judging each other dead do not take each other over (nor
-- deadlock on each other's rows). Held to the end of the transaction.
SELECT pg_advisory_xact_lock(7467838);

-- name: register_scheduler
-- This scheduler's lease row (ON CONFLICT for INSERT OR REPLACE: the whole row anew).
INSERT INTO schedulers (id, hostname, pid, start_time, started_at, heartbeat, replica) VALUES
    (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname,
    pid = excluded.pid, start_time = excluded.start_time, started_at = excluded.started_at,
    heartbeat = excluded.heartbeat, replica = excluded.replica, stopped_at = NULL,
    taken_over_at = NULL, taken_over_by = NULL;

-- name: scheduler_fence
-- Whether scheduler ? was taken over (a row: yes), its row locked FOR SHARE to the end of
-- the write transaction that reads it first: a takeover (take_over_scheduler updates the
-- row) waits for that transaction and then sees its writes, or the fence waits for the
-- takeover and sees it. The row is locked whether or not it was taken over: a filter on
-- taken_over_at in the locking scan would skip the row as this statement's snapshot had it
-- and lock nothing. A MATERIALIZED CTE, as the planner pushes a subquery's outer filter
-- into its locking scan.
WITH fence AS MATERIALIZED (SELECT taken_over_by, taken_over_at FROM schedulers WHERE id = ?
    FOR SHARE) SELECT taken_over_by FROM fence WHERE taken_over_at IS NOT NULL;

-- name: scheduler_row
-- Scheduler ?'s host, pid, process start time and heartbeat, if it is not stopped; its row
-- locked FOR UPDATE (a takeover reads it so): its heartbeat waits for the takeover and then
-- finds it taken over, so a scheduler is never taken over on a heartbeat read stale.
SELECT hostname, pid, start_time, heartbeat FROM schedulers WHERE id = ? AND stopped_at IS NULL
    FOR UPDATE;

-- name: reserve_ids
-- Reserve the next :n ids of counter :name; returns the block's last id. The upsert locks the
-- counter's row (ON CONFLICT DO UPDATE reads its latest version), so two reservations are
-- serialized and their blocks never overlap. GREATEST for MAX(a, b).
INSERT INTO counters (name, value) VALUES (:name, GREATEST(CAST(:floor AS bigint), 0) + :n)
    ON CONFLICT (name) DO UPDATE SET value = GREATEST(counters.value, CAST(:floor AS bigint))
    + :n RETURNING value;

-- name: stale_attempts_among
-- How many of the attempts in the JSON list :ids are no longer running under scheduler
-- :owner (jsonb_array_elements_text for json_each).
SELECT COUNT(*) FROM attempts WHERE id IN (SELECT CAST(value AS bigint) FROM
    jsonb_array_elements_text(CAST(:ids AS jsonb)) AS value) AND (state != 'running' OR
    scheduler_id != :owner);

-- name: count_fenced
-- Add to the counter of writes refused because their scheduler was taken over (the column
-- qualified).
INSERT INTO counters (name, value) VALUES ('fenced_writes', ?) ON CONFLICT (name) DO UPDATE
    SET value = counters.value + excluded.value;
