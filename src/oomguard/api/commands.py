"""The programs a server's submissions may run (``serve --commands FILE``).

The operator declares each program in a TOML or JSON file, in one of three forms::

    simulate = ["/opt/sim/bin/simulate", "--agents", "{n_agents}", "--seed", "{replicate}"]
    render = "render --scene {scene}"     # a command line, split into arguments

    [search]                              # the table form
    argv = ["/usr/bin/grep", "{flags}", "{pattern}", "/srv/data/corpus.txt"]
    cwd = "/srv/data"                     # default: a fresh private directory per attempt
    env = { LANG = "C.UTF-8" }            # default: PATH, LANG, LC_ALL, TZ, HOME, TMPDIR
    fields.pattern = { type = "regex", pattern = "[a-z ]{1,64}" }
    fields.flags = { type = "enum", values = ["-i", "-w"], options = true }

A submission names one (``"command": "search"``) and gives the parameters; each
parameter becomes exactly one argument, checked by its field's type (``str``, ``int``,
``float``, ``enum``, ``regex``); a value starting with ``-`` is refused unless the field
allows ``options``. A field may not be the program nor an interpreter's ``-c``/``-e``
code. Every form gets the safe defaults: a private ``cwd``, the minimal ``env``. Nothing
from the network becomes a command line, and no command runs through a shell
(docs/ARCHITECTURE.md, "Command tasks").
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys

from oomguard.api.schemas import COMMAND_PATTERN
from oomguard.errors import ConfigError
from oomguard.jobs.command import Command, command
from oomguard.jobs.command_fields import Field

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
    data: object
    try:
        data = json.loads(text) if path.endswith(".json") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"--commands {path!r}: not valid {_kind(path)}: {err}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"--commands {path!r}: expected a table of NAME = argument template")
    commands = {}
    for name, entry in data.items():
        if not re.match(NAME_PATTERN, name):
            raise ConfigError(f"--commands {path!r}: {name!r} is not a command name")
        try:
            commands[name] = declared(entry)
        except ConfigError as err:
            raise ConfigError(f"--commands {path!r}: {name}: {err}") from None
    return commands


_TABLE_KEYS = ("argv", "cwd", "env", "fields")


def declared(entry: object) -> Command:
    """One declared command from its list, string or table form (ConfigError if wrong)."""
    if isinstance(entry, (str, list, tuple)):
        return dataclasses.replace(command(entry), declared=True)
    if not isinstance(entry, dict):
        raise ConfigError(f"a command is a string or a list of strings, not {entry!r}")
    unknown = sorted(set(entry) - set(_TABLE_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} (a table has {_TABLE_KEYS})")
    if "argv" not in entry:
        raise ConfigError("a table needs argv = [...]")
    cwd = entry.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ConfigError("cwd is a string (an absolute path)")
    env = entry.get("env")
    if env is not None and (
        not isinstance(env, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise ConfigError('env is a table of NAME = "value" strings')
    fields = entry.get("fields", {})
    if not isinstance(fields, dict):
        raise ConfigError("fields is a table of NAME = {type = ...}")
    types = []
    for field, spec in fields.items():
        try:
            types.append((str(field), Field.from_table(spec)))
        except ConfigError as err:
            raise ConfigError(f"field {field}: {err}") from None
    return dataclasses.replace(
        command(entry["argv"]),
        declared=True,
        cwd=cwd,
        env=None if env is None else tuple(env.items()),
        types=tuple(types),
    )


def _kind(path: str) -> str:
    return "JSON" if path.endswith(".json") else "TOML"


__all__ = ["NAME_PATTERN", "declared", "read_commands"]
