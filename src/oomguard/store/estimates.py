"""The ``estimates`` table: what each memory key is known to need (the scheduler's
admission, ``scheduler/admission.py``, keeps it; see docs/ARCHITECTURE.md, "Admission")."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from oomguard.store.queries import Q


def summary(db: sqlite3.Connection) -> dict[str, tuple[int, int, int]]:
    return {str(k): (int(b), int(p), int(s)) for k, b, p, s in db.execute(Q["estimates_summary"])}


def rows(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    cur = db.execute(Q["estimate_rows"])
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
        Q["put_estimate"],
        full,
    )
