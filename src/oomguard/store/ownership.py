"""Files a store trusts: owned by this user, and written by nobody else.

A store holds pickles (results, payloads) and so do its blob files: a store file, its
``-wal`` or ``-shm``, or the blob directory that another user owns or that group or
others may write could have been planted or changed, and would run code as this user
when unpickled. Such a file is refused with :class:`~oomguard.errors.StoreError`
(exit code ``STORE``), before anything is read from it (docs/ARCHITECTURE.md, "Store").
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from oomguard.errors import StoreError

#: what SQLite keeps beside a store in WAL mode
SIDE_FILES = ("-wal", "-shm")


def check_owned(path: Path, what: str, fix: str) -> None:
    """Raise :class:`StoreError` if ``path`` exists and another user owns it, or its
    group or others may write it; ``fix`` says what to do about the mode."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise StoreError(
            f"cannot check {what} {str(path)!r}: {err.strerror or err}", path=str(path)
        ) from err
    if st.st_uid != os.geteuid():
        raise StoreError(
            f"{what} {str(path)!r} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}): refusing to use what someone else could have written",
            path=str(path),
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise StoreError(
            f"{what} {str(path)!r} may be written by its group or others (mode {mode:04o}): "
            f"refusing to use it; {fix}",
            path=str(path),
        )


def check_store_files(path: Path) -> None:
    """:func:`check_owned` for a store file and its ``-wal`` and ``-shm``."""
    for suffix in ("", *SIDE_FILES):
        file = Path(f"{path}{suffix}")
        check_owned(file, "store file", f"chmod 600 {str(file)!r}")


__all__ = ["SIDE_FILES", "check_owned", "check_store_files"]
