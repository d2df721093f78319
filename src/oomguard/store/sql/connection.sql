-- Write transactions (store/connection.py).

-- name: begin_immediate
-- Begin a write transaction, taking SQLite's write lock at once.
BEGIN IMMEDIATE;

-- name: commit
-- Commit the transaction.
COMMIT;

-- name: rollback
-- Roll the transaction back.
ROLLBACK;

-- name: wal_checkpoint_passive
-- Copy the WAL's committed pages into the store file, waiting for no reader or writer.
PRAGMA wal_checkpoint(PASSIVE);

-- name: wal_autocheckpoint_late
-- This connection checkpoints at its commits only past 10,000 WAL pages (about 40 MiB), not
-- 1,000: the scheduler loop's, whose checkpoints (their fsyncs) the sampler's thread does.
PRAGMA wal_autocheckpoint = 10000;
