-- oomguard store, schema version 3: what each memory key is known to need, beyond its
-- estimate: the spread of its peaks, the largest limit that OOM-killed it, and the cap it
-- was killed at (its tasks then fail needs_more_memory without running until the cap grows).
ALTER TABLE estimates ADD COLUMN peak_sum REAL NOT NULL DEFAULT 0;
ALTER TABLE estimates ADD COLUMN peak_sq REAL NOT NULL DEFAULT 0;
ALTER TABLE estimates ADD COLUMN killed_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE estimates ADD COLUMN unfit_cap INTEGER NOT NULL DEFAULT 0;
ALTER TABLE estimates ADD COLUMN proof TEXT NOT NULL DEFAULT '';
