"""Options shared by several ``oomguard`` commands, declared once.

Every option has an ``OOMGUARD_*`` environment variable (a test enforces it); :func:`env`
spells it the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from oomguard.units import parse_size

F = TypeVar("F", bound=Callable[..., Any])

STORE_HELP = "SQLite store file (created if missing)."


def env(name: str) -> dict[str, Any]:
    """``envvar=OOMGUARD_<NAME>`` shown in ``--help``."""
    return {"envvar": f"OOMGUARD_{name}", "show_envvar": True}


def size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A click callback: a memory size such as ``512MiB`` → bytes."""
    return None if value is None else parse_size(value)


def store_option(f: F) -> F:
    return click.option("--store", default="oomguard.sqlite", help=STORE_HELP, **env("STORE"))(f)


def json_option(help: str = "Print JSON.", name: str = "JSON") -> Callable[[F], F]:
    """``--json`` (into the parameter ``as_json``), with the envvar ``OOMGUARD_<name>``."""
    return click.option("--json", "as_json", is_flag=True, help=help, **env(name))
