"""Where a Dask worker notes which attempt of its group it has started.

A plain file per worker process, not a message: it survives the SIGKILL of the worker (the
page cache is the kernel's), and the nanny, on the same host, reads it when the worker
dies, so the executor tells the attempts that ran from those that never began. See
docs/ARCHITECTURE.md ("Dask"). The files live in this user's private runtime directory
(0700) and are opened ``O_EXCL | O_NOFOLLOW``: no other user can plant or point one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile

from oomguard.executors.dask.remote.answers import WorkerProgress


def runtime_dir() -> str | None:
    """This user's private directory for progress files: ``<tmp>/oomguard-<uid>``, made
    0700; None (no progress files) when it is not a directory this user owns and only
    they may use (planted by someone else, or opened up)."""
    path = os.path.join(tempfile.gettempdir(), f"oomguard-{os.geteuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None
    return path


def progress_path(pid: int) -> str | None:
    """Where the worker process ``pid`` notes which attempt of its group it has started
    (None: no private directory for it, see :func:`runtime_dir`).

    A plain file, not a message: it survives the SIGKILL of the worker (the page cache is
    the kernel's), and the nanny, on the same host, reads it when the worker dies.
    """
    directory = runtime_dir()
    return None if directory is None else os.path.join(directory, f"dask-{pid}.progress")


def read_progress(pid: int, remove: bool = True) -> WorkerProgress | None:
    """The Dask key and the index of the attempt a worker process started last."""
    path = progress_path(pid)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            key, index = fh.read(Progress.WIDTH).split()[:2]
        if remove:
            os.unlink(path)
        return WorkerProgress(key.decode(), int(index))
    except (OSError, ValueError):
        return None


class Progress:
    """Notes the group key and index of the attempt about to start (one pwrite each)."""

    WIDTH = 256

    def __init__(self) -> None:
        self.fd: int | None = None
        self.path = progress_path(os.getpid())
        if self.path is None:
            return
        # A new file, never one that is there (a dead process's of the same pid, or a
        # link): O_EXCL | O_NOFOLLOW; what is there is removed and the file made anew.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(2):
            try:
                self.fd = os.open(self.path, flags, 0o600)
                return
            except FileExistsError:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            except OSError:
                return

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
            if self.path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)


__all__ = ["Progress", "progress_path", "read_progress", "runtime_dir"]
