"""Where a store is: a path to an SQLite file, or a ``postgresql://`` URL; and how it is
shown in messages (a URL without its user and password)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

#: the URL schemes of a PostgreSQL store
URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a PostgreSQL store (a URL), not an SQLite file."""
    return os.fspath(location).startswith(URL_SCHEMES)


def shown(location: str | os.PathLike[str]) -> str:
    """``location`` as messages show it: a path as it is; a URL as
    ``postgresql://host:port/db`` (its socket directory, port and options kept), never
    its user or password."""
    text = os.fspath(location)
    if not is_url(text):
        return text
    parts = urlsplit(text)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    query = "&".join(
        kv for kv in parts.query.split("&") if kv.split("=")[0] in ("host", "port", "options")
    )
    return f"{parts.scheme}://{host}{parts.path}" + (f"?{query}" if query else "")


__all__ = ["URL_SCHEMES", "is_url", "shown"]
