-- The oomguard store's schema as it is now (version 7): what a new store is made from.
-- Older stores reach it through sql/migrations/ (tests/contract/test_store.py checks that
-- the migrations add up to this file). Change both together: a new migration, and here.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per scheduler process that has used the store; the live ones heartbeat. An
-- exclusive scheduler is alone; replicas share the store with each other.
CREATE TABLE schedulers (
    id          TEXT PRIMARY KEY,
    hostname    TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    start_time  REAL NOT NULL,   -- process start time: a pid alone is reused
    started_at  REAL NOT NULL,
    heartbeat   REAL NOT NULL,
    stopped_at  REAL,
    replica     INTEGER NOT NULL DEFAULT 0,  -- 1: shares the store with other replicas
    taken_over_at REAL,          -- found dead and taken over: its writes are refused
    taken_over_by TEXT           -- the scheduler that took it over
);

CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    namespace   TEXT NOT NULL DEFAULT 'default',
    fn          TEXT NOT NULL,       -- task reference module:function or file.py:function
    agg         TEXT,                -- aggregation reference, if any
    spec        TEXT NOT NULL,       -- JSON: options the job was submitted with
    fingerprint TEXT,                -- identifies a sweep so running it again resumes it
    state       TEXT NOT NULL DEFAULT 'open',   -- open (accepting), sealed (all tasks in), cancelled
    created_at  REAL NOT NULL,
    total_groups INTEGER NOT NULL DEFAULT 0,
    reserved    INTEGER NOT NULL DEFAULT 0,  -- tasks a submission holds room for until written
    told        TEXT                 -- the state its notifications last told (replicas: once)
);
CREATE UNIQUE INDEX jobs_fingerprint ON jobs(fingerprint) WHERE fingerprint IS NOT NULL;

CREATE TABLE tasks (
    id           INTEGER PRIMARY KEY,
    job_id       TEXT NOT NULL REFERENCES jobs(id),
    grp          INTEGER NOT NULL,          -- parameter group (the index of the params line)
    kind         TEXT NOT NULL,             -- 'task' or 'aggregate'
    replicate    INTEGER,                   -- replicate index, NULL without replicates
    fn           TEXT NOT NULL,
    params       TEXT,                      -- JSON object of keyword arguments
    params_ref   TEXT,                      -- file beside the store holding large params JSON
    payload      BLOB,                      -- pickled (args, kwargs) from the local Python API
    payload_ref  TEXT,                      -- file beside the store holding a large payload
    state        TEXT NOT NULL,             -- pending, ready, queued, running, succeeded, failed, cancelled
    deps         INTEGER NOT NULL DEFAULT 0, -- replicates still to succeed (aggregates)
    attempts     INTEGER NOT NULL DEFAULT 0,
    oom_attempts INTEGER NOT NULL DEFAULT 0,
    retries      INTEGER NOT NULL DEFAULT 0,
    oom_retries  INTEGER NOT NULL DEFAULT 3,
    timeout      REAL,
    memory       INTEGER,                   -- declared estimate (bytes)
    memory_key   TEXT,
    lock_key     TEXT,
    not_before   REAL NOT NULL DEFAULT 0,   -- retry backoff
    failure_class TEXT,
    error        TEXT,
    updated_at   REAL NOT NULL,
    owner        TEXT                       -- the scheduler that took it into its window
);
CREATE INDEX tasks_job_grp ON tasks(job_id, grp);
-- One index on the state, rewritten once when a task's state changes: the ready tasks of a
-- job in group order, a job's lowest open group, counts by state, open tasks of every job.
CREATE INDEX tasks_state ON tasks(state, job_id, grp);

CREATE TABLE attempts (
    id           INTEGER PRIMARY KEY,
    task_id      INTEGER NOT NULL REFERENCES tasks(id),
    n            INTEGER NOT NULL,          -- 1-based attempt number of the task
    scheduler_id TEXT NOT NULL,             -- the lease: valid while that scheduler heartbeats
    worker       TEXT,
    pid          INTEGER,
    state        TEXT NOT NULL,             -- running, succeeded, failed, skipped (never started), interrupted (scheduler stopped)
    started_at   REAL NOT NULL,
    ended_at     REAL,
    failure_class TEXT,
    admitted_bytes INTEGER,                 -- memory estimate admitted for this attempt
    limit_bytes  INTEGER,                   -- the kernel/watchdog limit it ran under
    peak_bytes   INTEGER,
    evidence     TEXT                       -- JSON: exit status, counters, kernel lines, traceback
);
CREATE INDEX attempts_task ON attempts(task_id);
CREATE INDEX attempts_running ON attempts(scheduler_id) WHERE state = 'running';

CREATE TABLE results (
    task_id     INTEGER PRIMARY KEY REFERENCES tasks(id),
    job_id      TEXT NOT NULL,
    attempt_id  INTEGER NOT NULL,
    value       BLOB,                      -- pickled result
    value_ref   TEXT,                      -- file beside the store holding a large result
    kind        TEXT NOT NULL DEFAULT 'task',
    part        INTEGER,                   -- Parquet part that holds the row (NULL: not yet exported)
    size        INTEGER                    -- bytes of the pickled value; NULL in v1 rows
);
CREATE INDEX results_job_part ON results(job_id, kind, part);
-- Only rows not yet in a Parquet part: what the sink looks for, every half second.
CREATE INDEX results_unexported ON results(job_id, kind) WHERE part IS NULL;

-- Parquet parts: the assignment of rows to a part commits before the file is written,
-- so a part lost to a crash is rewritten with the same rows (exactly once on disk).
CREATE TABLE parts (
    job_id  TEXT NOT NULL,
    kind    TEXT NOT NULL,                 -- 'tasks' or 'aggregates'
    n       INTEGER NOT NULL,
    out     TEXT NOT NULL,
    written INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, kind, n)
);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    ts      REAL NOT NULL,
    job_id  TEXT,
    task_id INTEGER,
    kind    TEXT NOT NULL,
    data    TEXT
);
CREATE INDEX events_job ON events(job_id, id);

CREATE TABLE locks (
    key        TEXT PRIMARY KEY,
    attempt_id INTEGER NOT NULL,
    task_id    INTEGER NOT NULL,
    owner      TEXT               -- the replica that took it (NULL: an exclusive scheduler's)
);

CREATE TABLE estimates (
    memory_key TEXT PRIMARY KEY,
    bytes      INTEGER NOT NULL,            -- learned estimate (peak with margin)
    peak_bytes INTEGER NOT NULL,            -- largest peak seen
    samples    INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    peak_sum   REAL NOT NULL DEFAULT 0,     -- sum of the peaks seen (their mean)
    peak_sq    REAL NOT NULL DEFAULT 0,     -- sum of their squares (their spread)
    killed_at  INTEGER NOT NULL DEFAULT 0,  -- largest limit an attempt was OOM-killed at
    unfit_cap  INTEGER NOT NULL DEFAULT 0,  -- the cap it was OOM-killed at: needs more
    proof      TEXT NOT NULL DEFAULT ''     -- the attempt that proved it unfit
);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- The dashboard's time series: per job, about once a second while the scheduler works on
-- it (bounded: retention, thinning, deleted with the job).
CREATE TABLE samples (
    id             INTEGER PRIMARY KEY,
    job_id         TEXT NOT NULL,
    ts             REAL NOT NULL,
    budget_bytes   INTEGER NOT NULL,      -- the memory admission hands out
    admitted_bytes INTEGER NOT NULL,      -- admitted to every attempt in flight (all jobs)
    job_admitted_bytes INTEGER NOT NULL,  -- of which to this job's attempts
    running        INTEGER NOT NULL,      -- this job's attempts in flight
    workers        TEXT NOT NULL          -- JSON: worker name -> RSS bytes (with children)
);
CREATE INDEX samples_job ON samples(job_id, ts);
CREATE INDEX samples_ts ON samples(ts);

-- The notification outbox: notices webhooks are to get, written with what caused them and
-- delivered by each receiver from its cursor (bounded: see store/outbox.py).
CREATE TABLE outbox (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: cursors point into it
    ts     REAL NOT NULL,         -- when it happened
    kind   TEXT NOT NULL,         -- attempt or job
    notice TEXT NOT NULL          -- JSON: the notice's fields
);
CREATE TABLE outbox_cursors (
    receiver  TEXT PRIMARY KEY,   -- SHA-256 of the receiver's URL: never the URL itself
    delivered INTEGER NOT NULL,   -- the last outbox id it delivered or gave up on
    holder    TEXT,               -- the scheduler delivering to it now (one at a time)
    held_until REAL NOT NULL DEFAULT 0  -- its hold lapses then unless renewed
);
