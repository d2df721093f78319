-- What each memory key is known to need (store/estimates.py).

-- name: estimates_summary
-- Each memory key's estimate, largest peak and number of samples.
SELECT memory_key, bytes, peak_bytes, samples FROM estimates;

-- name: estimate_rows
-- Everything known of each memory key's needs, by key.
SELECT memory_key, bytes, peak_bytes, samples, killed_at, unfit_cap, proof, peak_sum, peak_sq,
    updated_at FROM estimates ORDER BY memory_key;

-- name: put_estimate
-- Upsert what one memory key is known to need.
INSERT INTO estimates (memory_key, bytes, peak_bytes, samples, updated_at, killed_at, unfit_cap,
    proof, peak_sum, peak_sq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(memory_key) DO
    UPDATE SET bytes = excluded.bytes, peak_bytes = excluded.peak_bytes, samples =
    excluded.samples, updated_at = excluded.updated_at, killed_at = excluded.killed_at,
    unfit_cap = excluded.unfit_cap, proof = excluded.proof, peak_sum = excluded.peak_sum,
    peak_sq = excluded.peak_sq;
