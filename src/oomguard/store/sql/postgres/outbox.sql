-- PostgreSQL's own text of the statements of sql/outbox.sql where the dialects differ.

-- name: meta_default
-- Set a meta key unless it is set (ON CONFLICT for INSERT OR IGNORE).
INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING;

-- name: outbox_cursor_start
-- A new receiver's cursor, at the end of the outbox (ON CONFLICT for INSERT OR IGNORE).
INSERT INTO outbox_cursors (receiver, delivered) VALUES (?, (SELECT COALESCE(MAX(id), 0) FROM
    outbox)) ON CONFLICT (receiver) DO NOTHING;

-- name: outbox_advance
-- Move a receiver's cursor forward, never back (GREATEST for MAX(a, b)).
UPDATE outbox_cursors SET delivered = GREATEST(delivered, ?) WHERE receiver = ?;

-- name: outbox_low_cursor
-- The lowest cursor of the receivers in the JSON list ?, and how many of them have one.
SELECT MIN(delivered), COUNT(*) FROM outbox_cursors WHERE receiver IN (SELECT
    jsonb_array_elements_text(CAST(? AS jsonb)));

-- name: outbox_count_dropped
-- Add to the counter of outbox rows dropped undelivered (the column qualified).
INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value =
    counters.value + excluded.value;

-- name: outbox_add
-- A notice for the webhooks in the outbox; its id (RETURNING for SQLite's lastrowid).
INSERT INTO outbox (ts, kind, notice) VALUES (?, ?, ?) RETURNING id;
