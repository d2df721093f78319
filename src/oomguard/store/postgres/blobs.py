"""Large payloads, params and results of a PostgreSQL store, in its ``blobs`` table (SQLite
keeps them in files beside its store, :mod:`oomguard.store.blobs`): any host that reaches
the database reads any result.

Named by the SHA-256 of their content, as the files are; a row refers to one by name. A
blob is written in its own statement before the transaction that refers to it, and marked
used again when it is reused (``touched_at``): garbage collection deletes only a blob
still old and unreferenced at the moment of its ``DELETE``, so a blob about to be
referred to again is spared."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping

from oomguard.errors import BlobMissingError
from oomguard.store.blobs import PARAMS_INLINE_MAX, GarbageReport
from oomguard.store.connection import Connection
from oomguard.store.postgres.dialect import OWN
from oomguard.store.queries import Q
from oomguard.store.records import StoredParams


class BlobTable:
    """The ``blobs`` table of a PostgreSQL store (``store.blobs``)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def check_dir(self) -> None:
        """Nothing to check: no directory, the database's own permissions guard it."""

    def put(self, data: bytes, *, ahead: bool = False) -> str:
        """Store ``data`` in the table, named by its hash; return the name. ``ahead`` is
        taken for the protocol's sake (SQLite's files remember a name written ahead)."""
        name = hashlib.sha256(data).hexdigest()
        self._conn.db.execute(OWN["pg_blob_put"], {"name": name, "data": data, "now": time.time()})
        return name

    def get(self, name: str) -> bytes:
        """A blob's bytes; :class:`BlobMissingError` when it is gone."""
        row = self._conn.db.execute(OWN["pg_blob_get"], (name,)).fetchone()
        if row is None:
            raise BlobMissingError(
                f"blob {name} is missing (no row in the blobs table)", name=name, path="blobs"
            )
        return bytes(row[0])

    def params_of(self, params: str | None, params_ref: str | None) -> str | None:
        """A task's params JSON, read from its blob when it was too large for the row."""
        return self.get(params_ref).decode() if params_ref else params

    def params_row(self, params: Mapping[str, object] | str) -> StoredParams:
        """``params``/``params_ref`` columns for keyword arguments (large ones in a blob)."""
        text = params if isinstance(params, str) else json.dumps(params)
        if len(text) > PARAMS_INLINE_MAX:
            return StoredParams(params=None, params_ref=self.put(text.encode()))
        return StoredParams(params=text, params_ref=None)

    def collect_garbage(self, min_age: float = 3600.0, dry_run: bool = False) -> GarbageReport:
        """Delete the blobs no row refers to that were last written or reused more than
        ``min_age`` seconds ago (each checked again as it is deleted)."""
        cutoff = time.time() - min_age
        db = self._conn.db
        refs = {r[0] for r in db.execute(Q["referenced_blobs"])}
        blobs = referenced = young = removed = removed_bytes = 0
        for name, size, touched_at in db.execute(OWN["pg_blob_sizes"]).fetchall():
            blobs += 1
            if name in refs:
                referenced += 1
            elif touched_at >= cutoff:
                young += 1
            elif (
                dry_run
                or db.execute(OWN["pg_blob_delete"], {"name": name, "cutoff": cutoff}).rowcount
            ):
                removed += 1
                removed_bytes += int(size)
            else:
                referenced += 1
        return GarbageReport(blobs, referenced, young, removed, removed_bytes, 0, dry_run)


__all__ = ["BlobTable"]
