"""Secrets of the notification channels, and what is kept from leaving the host.

* **Secret files** (``--notify-secret-file``, ``--notify-url-file``,
  ``--sentry-dsn-file``) are read only when they are regular files owned by this user (or
  root) and closed to group and others, as ssh treats a private key
  (:func:`read_secret_file`): a webhook URL is its own credential (Slack's is), a DSN
  lets anyone send events, a signing key others can read signs nothing.
* **URLs are never printed whole** (:func:`redact_url`): logs, stats and the exit summary
  name a receiver by its scheme and host only.
* **Redaction** (:class:`Redactor`): the operator's regular expressions (``--redact``)
  and the channels' own secrets are replaced by ``[redacted]`` in every string of what
  leaves the host: webhook bodies and Sentry events (messages, tracebacks, stderr tails,
  memory keys, kernel lines). See docs/ARCHITECTURE.md ("Notifications").
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import TypeVar, cast
from urllib.parse import urlsplit

from oomguard.errors import ConfigError
from oomguard.private_files import check_private, read_private

V = TypeVar("V")

#: what a redacted match becomes
REDACTED = "[redacted]"


#: the check of a secret file: private to its owner (shared with the API's token files)
check_secret_file = check_private


def read_secret_file(path: str | os.PathLike[str], what: str) -> str:
    """The text of the secret file ``path`` (stripped; checked by :func:`check_private`);
    :class:`ConfigError` when it cannot be read or is empty."""
    text = read_private(path, what)
    if not text:
        raise ConfigError(f"{what} {str(path)!r} is empty")
    return text


def read_lines(path: str | os.PathLike[str], what: str) -> tuple[str, ...]:
    """The non-blank lines of a secret file (``#`` starts a comment line)."""
    text = read_secret_file(path, what)
    lines = tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )
    if not lines:
        raise ConfigError(f"{what} {str(path)!r} is empty")
    return lines


def redact_url(url: str) -> str:
    """``url`` as logs may show it: scheme and host (and port), the rest ``…``: a webhook's
    path (or a DSN's key) is its credential."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<a URL>"
    if ":" in host:
        host = f"[{host}]"
    user = "…@" if parts.username or parts.password else ""
    rest = "/…" if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme or '?'}://{user}{host}{port}{rest}"


def secret_parts(url: str) -> list[str]:
    """What of ``url`` is secret, for a :class:`Redactor`: the URL, its path and query (a
    Slack webhook's token), its user part (a Sentry DSN's key)."""
    parts = [url]
    try:
        split = urlsplit(url)
    except ValueError:
        return parts
    if split.path.strip("/"):
        parts.append(split.path + (f"?{split.query}" if split.query else ""))
        parts.append(split.path.strip("/"))
    if split.query:
        parts.append(split.query)
    if split.username:
        parts.append(split.username)
    return parts


class Redactor:
    """Replaces the operator's patterns and the channels' own secrets in text (and in
    every string of a JSON-ready value) with :data:`REDACTED`."""

    def __init__(self, patterns: Sequence[str] = (), secrets: Iterable[str] = ()) -> None:
        compiled = []
        for pattern in patterns:
            try:
                compiled.append(re.compile(pattern))
            except re.error as err:
                raise ConfigError(
                    f"--redact {pattern!r} is not a regular expression: {err}"
                ) from None
        literal = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)
        if literal:
            compiled.append(re.compile("|".join(re.escape(s) for s in literal)))
        self.patterns = tuple(compiled)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def text(self, value: str) -> str:
        for pattern in self.patterns:
            value = pattern.sub(REDACTED, value)
        return value

    def value(self, value: V) -> V:
        """``value`` with every string in it (keys of mappings included) redacted: of the
        same shape (a tuple becomes a list, as in JSON)."""
        if not self.patterns:
            return value
        if isinstance(value, str):
            return cast(V, self.text(value))
        if isinstance(value, dict):
            return cast(
                V,
                {
                    (self.text(k) if isinstance(k, str) else k): self.value(v)
                    for k, v in value.items()
                },
            )
        if isinstance(value, (list, tuple)):
            return cast(V, [self.value(v) for v in value])
        return value


__all__ = [
    "REDACTED",
    "Redactor",
    "check_secret_file",
    "read_lines",
    "read_secret_file",
    "redact_url",
    "secret_parts",
]
