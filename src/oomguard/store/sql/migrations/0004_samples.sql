-- oomguard store, schema version 4: the time series the dashboard draws. About once a
-- second the scheduler records, for each job it is working on, the memory it has admitted
-- against its budget, the job's attempts in flight and each worker's RSS. Bounded: rows
-- older than the retention go, a long job's older rows are thinned, and forgetting a job
-- deletes its rows (scheduler/samples.py, store/samples.py).
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
