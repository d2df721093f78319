-- PostgreSQL's own text of the statements of sql/leases.sql where the dialects differ.

-- name: register_scheduler
-- This scheduler's lease row (ON CONFLICT for INSERT OR REPLACE).
INSERT INTO schedulers (id, hostname, pid, start_time, started_at, heartbeat) VALUES
    (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname,
    pid = excluded.pid, start_time = excluded.start_time, started_at = excluded.started_at,
    heartbeat = excluded.heartbeat, stopped_at = NULL;
