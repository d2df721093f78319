-- Schedulers' leases and the recovery of what a dead one left (store/leases.py).

-- name: lock_leases
-- Serialize registering and taking over among schedulers: nothing on SQLite (its IMMEDIATE
-- transaction already does); on PostgreSQL pg_advisory_xact_lock(<oomguard leases>), taken
-- first in the transaction, held to its end.
SELECT 'lock_leases';

-- name: live_schedulers
-- Schedulers not marked stopped, other than scheduler ?, and whether each is a replica.
-- PostgreSQL: register and take over also take pg_advisory_xact_lock(<oomguard leases>)
-- first, so two schedulers registering at once see each other (SQLite: the IMMEDIATE
-- transaction already serializes them).
SELECT id, hostname, pid, start_time, heartbeat, replica FROM schedulers WHERE stopped_at IS NULL
    AND id != ?;

-- name: scheduler_stopped
-- Mark a scheduler stopped at ?.
UPDATE schedulers SET stopped_at = ? WHERE id = ?;

-- name: register_scheduler
-- This scheduler's lease row (heartbeat starts now); replica 1: it shares the store.
INSERT OR REPLACE INTO schedulers (id, hostname, pid, start_time, started_at, heartbeat, replica)
    VALUES (?, ?, ?, ?, ?, ?, ?);

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
UPDATE tasks SET state = 'ready', owner = NULL, updated_at = ? WHERE state IN ('queued', 'running');

-- name: lost_attempts
-- How many of a task's attempts were lost (their scheduler died).
SELECT COUNT(*) FROM attempts WHERE task_id = ? AND failure_class = 'lost';

-- name: task_lost_too_often
-- Fail a task whose attempts were lost too often; its place, for the aggregation it feeds.
UPDATE tasks SET state = 'failed', failure_class = 'lost', error = ?, updated_at = ? WHERE id = ? AND state IN ('queued', 'running', 'ready') RETURNING job_id, grp, kind;

-- name: requeue_task
-- A stopping scheduler hands a queued or running task back (ready, no owner).
UPDATE tasks SET state = 'ready', owner = NULL WHERE id = ? AND state IN ('queued', 'running');

-- name: release_scheduler_locks
-- Delete the locks scheduler :owner took or its attempts hold (it stops, or was taken over).
DELETE FROM locks WHERE owner = :owner OR attempt_id IN (SELECT id FROM attempts WHERE
    scheduler_id = :owner);

-- name: take_lock
-- Replica :owner takes lock :key for its attempt :attempt_id (about to start) if no one holds
-- it (no row changed: held). The same on PostgreSQL (ON CONFLICT DO NOTHING).
INSERT INTO locks (key, attempt_id, task_id, owner) VALUES (:key, :attempt_id, :task_id, :owner)
    ON CONFLICT(key) DO NOTHING;

-- name: drop_lock
-- Replica :owner gives back lock :key it took for attempt :attempt_id (the attempt did not
-- start).
DELETE FROM locks WHERE key = :key AND attempt_id = :attempt_id AND owner = :owner;

-- name: heartbeat
-- A scheduler's heartbeat: its lease is renewed, unless it was taken over (no row then).
UPDATE schedulers SET heartbeat = ? WHERE id = ? AND taken_over_at IS NULL;

-- name: scheduler_fence
-- Whether scheduler ? was taken over (a row: yes). Read first in each of its write
-- transactions: a scheduler taken over writes nothing more. PostgreSQL: SELECT ... FOR SHARE
-- on the scheduler's row (take_over_scheduler updates it), so a takeover and a write of the
-- scheduler it takes over are serialized.
SELECT taken_over_by FROM schedulers WHERE id = ? AND taken_over_at IS NOT NULL;

-- name: take_over_scheduler
-- Scheduler :id, found dead, is taken over by :by (no row changed: it was already taken
-- over or stopped, by someone else).
UPDATE schedulers SET taken_over_at = :now, taken_over_by = :by, stopped_at = :now
WHERE id = :id AND stopped_at IS NULL AND taken_over_at IS NULL;

-- name: scheduler_attempts_running
-- The attempts still running under scheduler ? (dead: taken over).
SELECT a.id, a.task_id, t.job_id FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.state
    = 'running' AND a.scheduler_id = ?;

-- name: requeue_owned_tasks
-- The tasks scheduler :owner had taken (queued or running) are ready again, with no owner.
UPDATE tasks SET state = 'ready', owner = NULL, updated_at = :now
WHERE state IN ('queued', 'running') AND owner = :owner;

-- name: reserve_ids
-- Reserve the next :n ids of counter :name (attempt ids of a replica: replicas number their
-- attempts from blocks that do not overlap); returns the block's last id. PostgreSQL: the
-- upsert takes the counter row's lock, so two reservations are serialized.
INSERT INTO counters (name, value) VALUES (:name, MAX(:floor, 0) + :n) ON CONFLICT(name) DO UPDATE
    SET value = MAX(value, :floor) + :n RETURNING value;

-- name: stale_attempts_among
-- How many of the attempts in the JSON list :ids are no longer running under scheduler
-- :owner (ended by a takeover, or another's): writes ending them are fenced off.
SELECT COUNT(*) FROM attempts WHERE id IN (SELECT value FROM json_each(:ids)) AND (state !=
    'running' OR scheduler_id != :owner);

-- name: count_fenced
-- Add to the counter of writes refused because their scheduler was taken over.
INSERT INTO counters (name, value) VALUES ('fenced_writes', ?) ON CONFLICT(name) DO UPDATE
    SET value = value + excluded.value;

-- name: scheduler_row
-- Scheduler ?'s host, pid, process start time and heartbeat, if it is not stopped.
SELECT hostname, pid, start_time, heartbeat FROM schedulers WHERE id = ? AND stopped_at IS NULL;

-- name: claim_job_notice
-- The scheduler that moves job :job_id's told state to :state tells it (no row changed:
-- another replica told it already).
UPDATE jobs SET told = :state WHERE id = :job_id AND (told IS NULL OR told != :state);
