"""The programs a server's submissions may run (``serve --commands FILE``).

The operator names each program and its argument template in a TOML or JSON file::

    simulate = ["/opt/sim/bin/simulate", "--agents", "{n_agents}", "--seed", "{replicate}"]
    render = "render --scene {scene}"     # a command line, split into arguments

A submission names one (``"command": "simulate"``) and gives the parameters; each
parameter becomes exactly one argument. Nothing from the network becomes a command line,
and no command runs through a shell (docs/ARCHITECTURE.md, "Command tasks").
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from oomguard.api.schemas import COMMAND_PATTERN
from oomguard.errors import ConfigError
from oomguard.jobs.command import Command, command

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

NAME_PATTERN = COMMAND_PATTERN


def read_commands(path: str) -> dict[str, Command]:
    """The commands of ``path`` by name; ConfigError saying what is wrong where."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--commands {path!r}: cannot read it: {err}") from None
    data: Any
    try:
        data = json.loads(text) if path.endswith(".json") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"--commands {path!r}: not valid {_kind(path)}: {err}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"--commands {path!r}: expected a table of NAME = argument template")
    commands = {}
    for name, template in data.items():
        if not re.match(NAME_PATTERN, name):
            raise ConfigError(f"--commands {path!r}: {name!r} is not a command name")
        try:
            commands[name] = command(template)
        except ConfigError as err:
            raise ConfigError(f"--commands {path!r}: {name}: {err}") from None
    return commands


def _kind(path: str) -> str:
    return "JSON" if path.endswith(".json") else "TOML"


__all__ = ["NAME_PATTERN", "read_commands"]
