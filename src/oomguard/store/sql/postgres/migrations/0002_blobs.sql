-- Version 2: large payloads, params and results in the database (SQLite keeps them in
-- files beside its store): any host that reaches the database can read any result.
CREATE TABLE blobs (
    name       text PRIMARY KEY,      -- SHA-256 of the content (rows refer to it by name)
    data       bytea NOT NULL,
    touched_at double precision NOT NULL  -- written or reused: garbage only when old
);
