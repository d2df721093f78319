-- Schedulers' leases and the recovery of what a dead one left (store/leases.py).

-- name: live_schedulers
-- Schedulers not marked stopped, other than scheduler ?.
SELECT id, hostname, pid, start_time, heartbeat FROM schedulers WHERE stopped_at IS NULL AND id
    != ?;

-- name: scheduler_stopped
-- Mark a scheduler stopped at ?.
UPDATE schedulers SET stopped_at = ? WHERE id = ?;

-- name: register_scheduler
-- This scheduler's lease row (heartbeat starts now).
INSERT OR REPLACE INTO schedulers (id, hostname, pid, start_time, started_at, heartbeat) VALUES
    (?, ?, ?, ?, ?, ?);

-- name: orphaned_attempts
-- Attempts still running under another (dead) scheduler.
SELECT a.id, a.task_id, t.job_id FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.state
    = 'running' AND a.scheduler_id != ?;

-- name: attempt_lost
-- End an orphaned attempt as lost, with its evidence.
UPDATE attempts SET state = 'failed', failure_class = 'lost', ended_at = ?, evidence = ? WHERE id = ?;

-- name: release_orphaned_locks
-- Delete the locks of attempts that are ended or belong to another scheduler.
DELETE FROM locks WHERE attempt_id IN (SELECT id FROM attempts WHERE state != 'running' OR
    scheduler_id != ?);

-- name: requeue_orphaned_tasks
-- Tasks queued or running under a dead scheduler are ready again.
UPDATE tasks SET state = 'ready', updated_at = ? WHERE state IN ('queued', 'running');

-- name: lost_attempts
-- How many of a task's attempts were lost (their scheduler died).
SELECT COUNT(*) FROM attempts WHERE task_id = ? AND failure_class = 'lost';

-- name: task_lost_too_often
-- Fail a task whose attempts were lost too often; its place, for the aggregation it feeds.
UPDATE tasks SET state = 'failed', failure_class = 'lost', error = ?, updated_at = ? WHERE id = ? AND state IN ('queued', 'running', 'ready') RETURNING job_id, grp, kind;

-- name: requeue_task
-- A stopping scheduler hands a queued or running task back (ready).
UPDATE tasks SET state = 'ready' WHERE id = ? AND state IN ('queued', 'running');

-- name: release_all_locks
-- Delete every lock (a stopping scheduler held them all).
DELETE FROM locks;

-- name: heartbeat
-- A scheduler's heartbeat: its lease is renewed.
UPDATE schedulers SET heartbeat = ? WHERE id = ?;
