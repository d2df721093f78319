-- oomguard store, schema version 5: one index on the tasks' state instead of three.
-- Every change of a task's state rewrote its entries in tasks_ready, tasks_open and
-- tasks_job_state; tasks_state (state, job_id, grp) serves all of their queries (the
-- ready tasks of a job in group order, a job's lowest open group, counts by state, the
-- open tasks of every job) and is rewritten once.
DROP INDEX IF EXISTS tasks_ready;
DROP INDEX IF EXISTS tasks_open;
DROP INDEX IF EXISTS tasks_job_state;
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state, job_id, grp);
