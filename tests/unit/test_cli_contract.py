"""Every option of every command has an OOMGUARD_* environment fallback shown in --help."""

from __future__ import annotations

from collections.abc import Iterator

import click

from oomguard.cli.main import _register, cli


def _commands(cmd: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, [*path, name])
    else:
        yield path, cmd


def test_every_option_has_an_env_fallback() -> None:
    _register()
    names = set()
    missing = []
    for path, cmd in _commands(cli, []):
        names.add(" ".join(path))
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name != "help":
                env = param.envvar
                if not (isinstance(env, str) and env.startswith("OOMGUARD_") and param.show_envvar):
                    missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert not missing, missing
    # The contract's command names.
    assert {
        "run",
        "status",
        "results",
        "retry",
        "cancel",
        "serve",
        "submit",
        "submit-batch",
        "bench",
        "oom events",
        "oom tree",
        "oom cgroup",
        "doctor",
        "profile heap",
    } <= names
