-- oomguard store, schema version 6: the notification outbox. A notice a webhook is to get
-- is written in the transaction that records what caused it (one row per failed attempt,
-- nothing per success), and delivered from here by each receiver in id order; its cursor
-- is the last id it delivered (or gave up on). Rows every receiver has passed are deleted;
-- past the bound the oldest go, counted (counters: outbox_dropped). See
-- store/outbox.py and notify/durable.py.
CREATE TABLE outbox (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: cursors point into it
    ts     REAL NOT NULL,         -- when it happened
    kind   TEXT NOT NULL,         -- attempt or job
    notice TEXT NOT NULL          -- JSON: the notice's fields
);
CREATE TABLE outbox_cursors (
    receiver  TEXT PRIMARY KEY,   -- SHA-256 of the receiver's URL: never the URL itself
    delivered INTEGER NOT NULL    -- the last outbox id it delivered or gave up on
);
