"""The ``estimates`` table: what each memory key is known to need (the scheduler's
admission, ``scheduler/admission.py``, keeps it; see docs/ARCHITECTURE.md, "Admission")."""

from __future__ import annotations

import time
from collections.abc import Iterable

from oomguard.store.db import Db
from oomguard.store.queries import Q
from oomguard.store.records import KeyEstimate


def summary(db: Db) -> dict[str, tuple[int, int, int]]:
    return {str(k): (int(b), int(p), int(s)) for k, b, p, s in db.execute(Q["estimates_summary"])}


def rows(db: Db) -> dict[str, KeyEstimate]:
    return {
        str(key): KeyEstimate(
            memory_key=str(key),
            bytes=int(b),
            peak_bytes=int(p),
            samples=int(n),
            killed_at=int(killed or 0),
            unfit_cap=int(unfit or 0),
            proof=str(proof or ""),
            peak_sum=float(psum or 0.0),
            peak_sq=float(psq or 0.0),
            updated_at=None if updated is None else float(updated),
        )
        for key, b, p, n, killed, unfit, proof, psum, psq, updated in db.execute(Q["estimate_rows"])
    }


def put(db: Db, rows: Iterable[KeyEstimate]) -> None:
    """Upsert rows inside the caller's transaction (written now)."""
    now = time.time()
    db.executemany(
        Q["put_estimate"],
        [
            (
                r.memory_key,
                r.bytes,
                r.peak_bytes,
                r.samples,
                now,
                r.killed_at,
                r.unfit_cap,
                r.proof,
                r.peak_sum,
                r.peak_sq,
            )
            for r in rows
        ],
    )
