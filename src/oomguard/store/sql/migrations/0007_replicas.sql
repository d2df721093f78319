-- oomguard store, schema version 7: several schedulers (replicas) on one store.
-- A scheduler registers as a replica (shares the store with other live replicas) or as
-- the exclusive owner (alone, as before). A task taken into a scheduler's window names
-- its owner; a dead scheduler is taken over by a live replica, in one transaction that
-- marks it (taken_over_at, taken_over_by), ends its running attempts lost and makes its
-- owned tasks ready. A scheduler's writes commit only while it is not taken over
-- (fencing). A job submitted over HTTP reserves its tasks (jobs.reserved) in the
-- transaction that checks the server's quotas, so replicas' quotas hold across them. See
-- store/leases.py and docs/ARCHITECTURE.md, "The store".
ALTER TABLE schedulers ADD COLUMN replica INTEGER NOT NULL DEFAULT 0;
ALTER TABLE schedulers ADD COLUMN taken_over_at REAL;
ALTER TABLE schedulers ADD COLUMN taken_over_by TEXT;
ALTER TABLE tasks ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0;
-- The state of the job the notifications last told (replicas tell each change once).
ALTER TABLE jobs ADD COLUMN told TEXT;
-- A lock names the scheduler that took it (a replica takes a lock in the store before its
-- attempt starts; a takeover releases the dead one's).
ALTER TABLE locks ADD COLUMN owner TEXT;
-- One scheduler at a time delivers each receiver's webhooks: the one holding its cursor.
ALTER TABLE outbox_cursors ADD COLUMN holder TEXT;
ALTER TABLE outbox_cursors ADD COLUMN held_until REAL NOT NULL DEFAULT 0;
