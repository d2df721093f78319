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
