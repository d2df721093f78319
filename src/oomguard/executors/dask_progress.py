"""Where a Dask worker notes which attempt of its group it has started.

A plain file per worker process, not a message: it survives the SIGKILL of the worker (the
page cache is the kernel's), and the nanny, on the same host, reads it when the worker
dies, so the executor tells the attempts that ran from those that never began. See
docs/ARCHITECTURE.md ("Dask").
"""

from __future__ import annotations

import contextlib
import os
from typing import Any


def progress_path(pid: int) -> str:
    """Where the worker process ``pid`` notes which attempt of its group it has started.

    A plain file, not a message: it survives the SIGKILL of the worker (the page cache is
    the kernel's), and the nanny, on the same host, reads it when the worker dies.
    """
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"oomguard-dask-{pid}.progress")


def read_progress(pid: int, remove: bool = True) -> dict[str, Any] | None:
    """``{"key": <Dask key>, "index": <attempt started last>}`` of a worker process."""
    path = progress_path(pid)
    try:
        with open(path, "rb") as fh:
            key, index = fh.read().split()[:2]
        if remove:
            os.unlink(path)
        return {"key": key.decode(), "index": int(index)}
    except (OSError, ValueError):
        return None


class Progress:
    """Notes the group key and index of the attempt about to start (one pwrite each)."""

    WIDTH = 256

    def __init__(self) -> None:
        self.fd: int | None = None
        try:
            self.fd = os.open(progress_path(os.getpid()), os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError:
            self.fd = None

    def note(self, key: str, index: int) -> None:
        if self.fd is None:
            return
        line = f"{key} {index}\n".encode().ljust(self.WIDTH)
        with contextlib.suppress(OSError):
            os.pwrite(self.fd, line, 0)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            with contextlib.suppress(OSError):
                os.unlink(progress_path(os.getpid()))


__all__ = ["Progress", "progress_path", "read_progress"]
