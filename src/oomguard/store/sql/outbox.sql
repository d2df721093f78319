-- The webhooks' outbox and each receiver's cursor (store/outbox.py).

-- name: outbox_add
-- A notice for the webhooks in the outbox.
INSERT INTO outbox (ts, kind, notice) VALUES (?, ?, ?);

-- name: meta_default
-- Set a meta key unless it is set (the store's name, made once).
INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?);

-- name: outbox_cursor_start
-- A new receiver's cursor, at the end of the outbox (it gets what comes next).
INSERT OR IGNORE INTO outbox_cursors (receiver, delivered) VALUES (?, (SELECT COALESCE(MAX(id),
    0) FROM outbox));

-- name: outbox_cursor
-- The last outbox row receiver ? delivered.
SELECT delivered FROM outbox_cursors WHERE receiver = ?;

-- name: outbox_after
-- Up to ? outbox rows after row ?, in order.
SELECT id, ts, kind, notice FROM outbox WHERE id > ? ORDER BY id LIMIT ?;

-- name: outbox_advance
-- Move a receiver's cursor forward (never back).
UPDATE outbox_cursors SET delivered = MAX(delivered, ?) WHERE receiver = ?;

-- name: outbox_low_cursor
-- The lowest cursor of the receivers in the JSON list ?, and how many of them have one.
SELECT MIN(delivered), COUNT(*) FROM outbox_cursors WHERE receiver IN (SELECT value FROM
    json_each(?));

-- name: outbox_trim
-- Delete the outbox rows up to row ? (every receiver passed them, or they are dropped).
DELETE FROM outbox WHERE id <= ?;

-- name: outbox_top
-- The newest outbox row's id.
SELECT MAX(id) FROM outbox;

-- name: outbox_count_dropped
-- Add to the counter of outbox rows dropped undelivered.
INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value +
    excluded.value;

-- name: outbox_count_after
-- Outbox rows after row ? (what a receiver there has still to deliver).
SELECT COUNT(*) FROM outbox WHERE id > ?;

-- name: outbox_count
-- Rows in the outbox.
SELECT COUNT(*) FROM outbox;

-- name: outbox_hold
-- Scheduler :holder holds receiver :receiver's cursor until :until (one scheduler delivers to
-- a receiver at a time: replicas would deliver every row twice): taken if free, its own, or
-- lapsed; the cursor if held, no row if another holds it.
UPDATE outbox_cursors SET holder = :holder, held_until = :until
WHERE receiver = :receiver AND (holder IS NULL OR holder = :holder OR held_until < :now)
RETURNING delivered;

-- name: outbox_let_go
-- The holds of scheduler ? end (it stopped, or it was taken over).
UPDATE outbox_cursors SET holder = NULL, held_until = 0 WHERE holder = ?;
