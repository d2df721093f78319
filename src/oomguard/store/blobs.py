"""Files beside the store (``STORE.blobs/``) for large payloads, params and results.

The directory is made private (0700; each file 0600) and one that another user owns, or
may write to, is refused: blobs are unpickled.

Blobs are named by the SHA-256 of their content, so equal payloads share one file. A row
refers to a blob by name (``tasks.params_ref``, ``tasks.payload_ref``,
``results.value_ref``); a blob no row refers to is garbage once it is old enough.

Collection is safe beside a live scheduler, which writes a blob *before* the transaction
that refers to it commits:

- :meth:`BlobFiles.put` refreshes the mtime of a blob it reuses, so a blob that is
  about to be referred to again is young;
- :meth:`BlobFiles.collect_garbage` first renames a candidate aside, then looks at it again:
  it is deleted only if, after the rename, it is still old and still unreferenced. A
  ``put`` that raced with the rename either refreshed the mtime before it (the blob is
  kept) or found no file after it and wrote a fresh one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from oomguard.errors import BlobMissingError
from oomguard.store.db import Db
from oomguard.store.failures import translated
from oomguard.store.ownership import check_owned
from oomguard.store.queries import Q
from oomguard.store.records import StoredParams

if TYPE_CHECKING:
    from oomguard.store.connection import Connection

#: payloads and results larger than this go to files beside the store
BLOB_THRESHOLD = 1024 * 1024
#: params JSON larger than this is kept in a blob file, not in the task row
PARAMS_INLINE_MAX = 64 * 1024
#: the columns that refer to blobs by name
_REFERENCES = Q["referenced_blobs"]
#: bytes of blobs written ahead of the rows that refer to them whose names are remembered
#: (:meth:`BlobFiles.put` ``ahead``), at most: the row's own ``put`` hashes none again
NAMED_MAX_BYTES = 128 * 1024 * 1024
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".gc-"


class BlobReader(Protocol):
    """What reads blobs back (the store's views): files here, a table on PostgreSQL
    (:class:`~oomguard.store.postgres.blobs.BlobTable`)."""

    def get(self, name: str) -> bytes: ...

    def params_of(self, params: str | None, params_ref: str | None) -> str | None: ...


@dataclass(frozen=True)
class GarbageReport:
    """What :meth:`BlobFiles.collect_garbage` found and did."""

    blobs: int  # blob files looked at
    referenced: int  # kept: a row refers to them
    young: int  # kept: unreferenced but younger than min_age (may be about to be used)
    removed: int  # unreferenced, old: deleted (or would be, with dry_run)
    removed_bytes: int
    temporary_removed: int  # half-written files left by a killed process
    dry_run: bool

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


@translated
class BlobFiles:
    """The blob files of a store (``STORE.blobs/``); composed into
    :class:`~oomguard.store.sqlite.SqliteStore` as ``store.blobs``."""

    def __init__(self, conn: Connection, blob_dir: Path) -> None:
        self._conn = conn
        self.blob_dir = blob_dir
        #: the directory was found (or made) private to this user
        self._checked = False
        #: id(data) -> (data, its name): written ahead (a reference kept, so the id is its)
        self._named: OrderedDict[int, tuple[bytes, str]] = OrderedDict()
        self._named_bytes = 0
        self._named_lock = threading.Lock()
        self.check_dir()

    def check_dir(self) -> None:
        """Refuse (:class:`~oomguard.errors.StoreError`) a blob directory another user
        owns or may write to: blobs are unpickled, so a planted file would run as this
        user. Checked when the store is opened and again before the first blob is used
        (the directory may be made meanwhile, in a shared place)."""
        if self._checked:
            return
        try:
            st = os.stat(self.blob_dir)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            return  # not a directory: writing a blob fails, and says so
        check_owned(self.blob_dir, "blob directory", "chmod 700 it")
        self._checked = True

    def _ready(self) -> None:
        """The blob directory, made private (0700) if missing, and checked."""
        if not self._checked:
            with contextlib.suppress(FileExistsError):
                self.blob_dir.mkdir(mode=0o700)
            self.check_dir()

    @property
    def db(self) -> Db:
        return self._conn.db

    def put(self, data: bytes, *, ahead: bool = False) -> str:
        """Write ``data`` to a file beside the store, named by its hash; return the name.

        ``ahead``: written before the row that will refer to it (a fetch thread of the
        Dask executor): its name is remembered for the row's own ``put`` of the same
        object, which then neither hashes nor writes it again."""
        name = self._named_of(data)
        if name is None:
            name = hashlib.sha256(data).hexdigest()
        self._ready()
        final = self.blob_dir / name
        try:
            os.utime(final)  # reused: young again, so garbage collection leaves it alone
            return self._remember(data, name) if ahead else name
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(dir=self.blob_dir, prefix=_TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return self._remember(data, name) if ahead else name

    def _remember(self, data: bytes, name: str) -> str:
        with self._named_lock:
            if id(data) not in self._named:
                self._named[id(data)] = (data, name)
                self._named_bytes += len(data)
            while self._named_bytes > NAMED_MAX_BYTES:  # oldest first: hashed again if put
                _, (old, _) = self._named.popitem(last=False)
                self._named_bytes -= len(old)
        return name

    def _named_of(self, data: bytes) -> str | None:
        with self._named_lock:
            entry = self._named.get(id(data))
            if entry is None or entry[0] is not data:
                return None
            del self._named[id(data)]
            self._named_bytes -= len(data)
        return entry[1]

    def get(self, name: str) -> bytes:
        """A blob's bytes; :class:`BlobMissingError` when its file is gone."""
        self.check_dir()
        path = self.blob_dir / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise BlobMissingError(
                f"blob {name} is missing (no file {str(path)!r})", name=name, path=str(path)
            ) from None

    def params_of(self, params: str | None, params_ref: str | None) -> str | None:
        """A task's params JSON, read from its blob file when it was too large for the row."""
        return self.get(params_ref).decode() if params_ref else params

    def params_row(self, params: Mapping[str, object] | str) -> StoredParams:
        """``params``/``params_ref`` columns for keyword arguments (large ones in a blob)."""
        text = params if isinstance(params, str) else json.dumps(params)
        if len(text) > PARAMS_INLINE_MAX:
            return StoredParams(params=None, params_ref=self.put(text.encode()))
        return StoredParams(params=text, params_ref=None)

    def _referenced(self, name: str) -> bool:
        row = self.db.execute(
            Q["blob_referenced"],
            (name, name, name),
        ).fetchone()
        return row is not None

    def collect_garbage(self, min_age: float = 3600.0, dry_run: bool = False) -> GarbageReport:
        """Delete blob files no row refers to that are older than ``min_age`` seconds.

        Also deletes temporary files older than ``min_age`` (a process killed while writing
        a blob leaves one). Safe while a scheduler runs on the store; see the module doc.
        """
        blobs = referenced = young = removed = removed_bytes = temporary = 0
        if not self.blob_dir.is_dir():
            return GarbageReport(0, 0, 0, 0, 0, 0, dry_run)
        cutoff = time.time() - min_age
        refs = {r[0] for r in self.db.execute(_REFERENCES)}
        for entry in os.scandir(self.blob_dir):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
                if st.st_mtime < cutoff:
                    temporary += 1
                    if not dry_run:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                continue
            blobs += 1
            if entry.name in refs:
                referenced += 1
            elif st.st_mtime >= cutoff:
                young += 1
            elif dry_run or self._remove_if_garbage(Path(entry.path), cutoff):
                removed += 1
                removed_bytes += st.st_size
            else:
                referenced += 1
        return GarbageReport(blobs, referenced, young, removed, removed_bytes, temporary, dry_run)

    def _remove_if_garbage(self, path: Path, cutoff: float) -> bool:
        aside = path.with_name(_TRASH_PREFIX + path.name)
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        try:
            still_old = aside.stat().st_mtime < cutoff
        except FileNotFoundError:
            return False
        if still_old and not self._referenced(path.name):
            aside.unlink()
            return True
        # Used again meanwhile: put it back (a fresh copy written meanwhile is identical).
        os.replace(aside, path)
        return False
