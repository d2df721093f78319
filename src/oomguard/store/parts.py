"""The store's book of Parquet parts: which stored results are in which part file.

Composed into :class:`~oomguard.store.sqlite.SqliteStore` as ``store.parts``; the writer
(:mod:`oomguard.results.parquet`) asks it, and never writes SQL itself. A part's rows are
assigned in a transaction *before* its file is written, and the part is marked written
once the file is renamed into place: a part lost to a crash is rewritten with the same
rows, and no row is ever in two parts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomguard.store.db import Db
from oomguard.store.failures import translated
from oomguard.store.queries import Q

if TYPE_CHECKING:
    from oomguard.store.connection import Connection

#: the size of a result row stored before schema 2, which did not record it
_SIZE = "COALESCE(size, LENGTH(value), 0)"


@dataclass(frozen=True)
class PendingResults:
    """Results of one job and kind not yet in a part."""

    job_id: str
    kind: str
    count: int
    bytes: int


@translated
class PartBook:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def _db(self) -> Db:
        return self._conn.db

    def unwritten(self) -> list[tuple[str, str, int, str]]:
        """``(job_id, kind, n, out)`` of parts assigned but not yet written."""
        return [
            (str(j), str(k), int(n), str(o))
            for j, k, n, o in self._db.execute(Q["unwritten_parts_all"])
        ]

    def outputs(self, jobs: Iterable[str] | None) -> dict[str, str]:
        """Output directory by job, for ``jobs`` (None: every job) that have one; a job
        forgotten meanwhile is simply not there."""
        if jobs is None:
            rows = self._db.execute(Q["job_specs"]).fetchall()
        else:
            rows = [row for j in jobs for row in self._db.execute(Q["job_spec"], (j,))]
        outs = {}
        for job_id, spec in rows:
            out = json.loads(spec).get("out")
            if out:
                outs[str(job_id)] = str(out)
        return outs

    def pending(self, job_id: str) -> list[PendingResults]:
        """The job's stored results not yet in a part, by kind."""
        return [
            PendingResults(job_id, str(kind), int(count), int(size))
            for kind, count, size in self._db.execute(
                Q["results_unassigned"],
                (job_id,),
            )
        ]

    def assign(
        self, job_id: str, kind: str, out: str, max_rows: int, max_bytes: int
    ) -> tuple[int, int, int]:
        """Commit the next part's rows (oldest first, up to the row and byte bounds, at
        least one); return ``(part number, rows, bytes)``."""
        with self._conn.transaction() as db:
            row = db.execute(
                Q["last_part"],
                (job_id, kind),
            ).fetchone()
            n = int(row[0]) + 1
            chosen: list[int] = []
            total = 0
            for task_id, size in db.execute(
                Q["results_for_part"],
                (job_id, kind, max_rows),
            ):
                if chosen and total + size > max_bytes:
                    break
                chosen.append(task_id)
                total += size
            db.execute(
                Q["insert_part"],
                (job_id, kind, n, out),
            )
            db.executemany(Q["result_part"], [(n, t) for t in chosen])
        return n, len(chosen), total

    def written(self, job_id: str, kind: str, n: int) -> None:
        """Part ``n``'s file was renamed into place."""
        with self._conn.transaction() as db:
            db.execute(
                Q["part_written"],
                (job_id, kind, n),
            )

    def has_replicates(self, job_id: str) -> bool:
        """Whether the job's tasks are numbered replicates (the rows get the column)."""
        row = self._db.execute(
            Q["has_replicates"],
            (job_id,),
        ).fetchone()
        return row is not None


__all__ = ["PartBook", "PendingResults"]
