"""Files that hold secrets (bearer tokens, the tokens file, TLS keys, the notification
channels' URLs, DSN and signing keys): read only when private to their owner.

As ssh does with a private key, a file that its group or others may read or write, or
that belongs to another user (root aside), is refused (:class:`~oomguard.errors.ConfigError`,
exit 2) rather than used: a token others can read is no secret, and one they can write lets
them choose it. Shared by the API and the notification channels (a layer below it).
"""

from __future__ import annotations

import os
import stat

from oomguard.errors import ConfigError


def check_private(path: str | os.PathLike[str], what: str) -> None:
    """Raise :class:`ConfigError` unless ``path`` is a file only its owner may use."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {err.strerror or err}") from err
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {str(path)!r} is not a regular file")
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(
            f"{what} {str(path)!r} belongs to another user (uid {st.st_uid}): refusing to use it"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{what} {str(path)!r} is open to its group or others (mode {mode:04o}): "
            f"refusing to use it; chmod 600 {str(path)!r}"
        )


def read_private(path: str | os.PathLike[str], what: str) -> str:
    """The text of ``path`` (stripped), once :func:`check_private` found it private."""
    check_private(path, what)
    try:
        with open(path) as fh:
            return fh.read().strip()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise ConfigError(f"cannot read {what} {str(path)!r}: {reason}") from err


__all__ = ["check_private", "read_private"]
