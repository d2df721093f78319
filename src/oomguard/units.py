"""Memory sizes (``"2GiB"`` ⇄ bytes) and durations (``"1h30m"`` → seconds).

Binary units (``KiB``, ``MiB``, ``GiB``, ``TiB``, and the short ``K``, ``M``, ``G``, ``T``
as used by ``ulimit``, Docker and Kubernetes' ``Ki``/``Mi``/``Gi``) are powers of 1024.
Decimal units (``kB``/``KB``, ``MB``, ``GB``, ``TB``) are powers of 1000. A bare number
is bytes. ``0`` means zero bytes (callers decide whether zero means "no limit").
Negative sizes, fractions of a byte and unknown units are rejected.
"""

from __future__ import annotations

import math
import re

from oomguard.errors import ConfigError, InvalidSizeError

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "ki": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "ti": 1024**4,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}

_SIZE_RE = re.compile(r"^\s*(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[a-zA-Z]*)\s*$")


def parse_size(text: str | int | float) -> int:
    """Return the number of bytes ``text`` names, or raise :class:`InvalidSizeError`."""
    if isinstance(text, bool):
        raise InvalidSizeError(f"invalid memory size {text!r}", value=text)
    if isinstance(text, (int, float)):
        if isinstance(text, float) and not math.isfinite(text):
            raise InvalidSizeError(f"invalid memory size {text!r}", value=text)
        if text < 0:
            raise InvalidSizeError(
                f"invalid memory size {text!r}: sizes cannot be negative", value=text
            )
        return int(text)
    match = _SIZE_RE.match(str(text))
    if match is None:
        hint = " (sizes cannot be negative)" if str(text).strip().startswith("-") else ""
        raise InvalidSizeError(
            f"invalid memory size {text!r}{hint}: use a number with a unit such as "
            "512MiB, 2GiB (powers of 1024) or 2GB (powers of 1000)",
            value=text,
        )
    unit = match["unit"].lower()
    if unit not in _UNITS:
        raise InvalidSizeError(
            f"invalid memory size {text!r}: unknown unit {match['unit']!r} "
            "(use B, KiB, MiB, GiB, TiB, K, M, G, T, KB, MB, GB or TB)",
            value=text,
        )
    value = float(match["num"]) * _UNITS[unit]
    if value != int(value) and value < 1:
        raise InvalidSizeError(f"invalid memory size {text!r}: less than one byte", value=text)
    return int(value)


def format_size(n: int | None) -> str:
    """Format bytes with a binary unit: ``format_size(1536 * 1024**2) == "1.5GiB"``."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(size)}B"
            text = f"{size:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
        size /= 1024
    return f"{n}B"  # pragma: no cover


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``10m``, ``2h``, ``1d`` or ``1h30m``."""
    compact = text.strip().lower()
    pos, total = 0, 0.0
    while pos < len(compact):
        m = _DURATION_RE.match(compact, pos)
        if m is None or m.end() == pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if not compact or pos != len(compact):
        raise ConfigError(
            f"invalid duration {text!r}: use a number with s, m, h, d or w (e.g. 10m, 2h)",
            value=text,
        )
    return total


def safe_text(text: str) -> str:
    """``text`` as it can be encoded in UTF-8: lone surrogates become ``\\udXXX`` escapes.

    Text from tasks (error messages, results) may hold lone surrogates (decoded with
    ``surrogateescape``, or built by hand); SQLite and Parquet store UTF-8 only.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def key_order(key: str) -> tuple[str, float, str]:
    """A sort key for memory keys (``fn|NAME=VALUE``) in the order of their values:
    ``n_agents=50`` before ``n_agents=100`` (not as strings, ``100`` before ``50``)."""
    head, _, value = key.rpartition("=")
    try:
        return (head, float(value), "")
    except ValueError:
        return (head, math.inf, value)
