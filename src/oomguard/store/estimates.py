"""The ``estimates`` table: what each memory key is known to need (the scheduler's
admission, ``scheduler/admission.py``, keeps it; see docs/ARCHITECTURE.md, "Admission")."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any


def summary(db: sqlite3.Connection) -> dict[str, tuple[int, int, int]]:
    return {
        str(k): (int(b), int(p), int(s))
        for k, b, p, s in db.execute("SELECT memory_key, bytes, peak_bytes, samples FROM estimates")
    }


def rows(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    cur = db.execute(
        "SELECT memory_key, bytes, peak_bytes, samples, killed_at, unfit_cap, proof, "
        "peak_sum, peak_sq, updated_at FROM estimates ORDER BY memory_key"
    )
    names = [d[0] for d in cur.description]
    return {str(r[0]): dict(zip(names[1:], r[1:], strict=True)) for r in cur}


def put(db: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    """Upsert rows inside the caller's transaction; missing trailing values default."""
    now = time.time()
    full = []
    for row in rows:
        key, b, p, s, *rest = row
        killed, unfit, proof, psum, psq = (list(rest) + [0, 0, "", 0.0, 0.0][len(rest) :])[:5]
        full.append((key, b, p, s, now, killed, unfit, proof, psum, psq))
    db.executemany(
        "INSERT INTO estimates (memory_key, bytes, peak_bytes, samples, updated_at, "
        "killed_at, unfit_cap, proof, peak_sum, peak_sq) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(memory_key) DO UPDATE SET "
        "bytes = excluded.bytes, peak_bytes = excluded.peak_bytes, "
        "samples = excluded.samples, updated_at = excluded.updated_at, "
        "killed_at = excluded.killed_at, unfit_cap = excluded.unfit_cap, "
        "proof = excluded.proof, peak_sum = excluded.peak_sum, peak_sq = excluded.peak_sq",
        full,
    )
