"""Entry point of the ``oomguard`` command.

Every command module registers its commands on :data:`cli`. Errors derived from
:class:`~oomguard.errors.OomguardError` become a one-line message and an
:class:`~oomguard.cli.exit_codes.ExitCode`, never a traceback.
"""

from __future__ import annotations

import sys

import click

from oomguard import errors
from oomguard.cli.exit_codes import ExitCode

_EXIT_FOR: list[tuple[type[errors.OomguardError], ExitCode]] = [
    (errors.ConfigError, ExitCode.USAGE),
    (errors.TaskReferenceError, ExitCode.NOT_FOUND),
    (errors.JobNotFoundError, ExitCode.NOT_FOUND),
    (errors.InputFileNotFoundError, ExitCode.NOT_FOUND),
    (errors.JobActiveError, ExitCode.JOB_ACTIVE),
    (errors.PayloadError, ExitCode.PAYLOAD),
    (errors.StoreError, ExitCode.STORE),
    (errors.OutputError, ExitCode.OUTPUT),
    (errors.IsolationError, ExitCode.ISOLATION),
    (errors.KernelLogUnavailable, ExitCode.UNAVAILABLE),
    (errors.BackpressureError, ExitCode.BACKPRESSURE),
    (errors.ServerConnectionError, ExitCode.CONNECTION),
]


def exit_code_for(err: errors.OomguardError) -> ExitCode:
    for cls, code in _EXIT_FOR:
        if isinstance(err, cls):
            return code
    return ExitCode.USAGE


class OomguardGroup(click.Group):
    """A click group that turns oomguard errors into a message and an exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except errors.OomguardError as err:
            click.echo(f"oomguard: error: {err}", err=True)
            ctx.exit(int(exit_code_for(err)))
        except KeyboardInterrupt:
            click.echo("oomguard: interrupted", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))


@click.group(
    cls=OomguardGroup,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.version_option(package_name="oomguard")
def cli() -> None:
    """oomguard: run many tasks in memory-limited workers, survive the OOM killer,
    and say why every task died.

    Every option can also be set through an OOMGUARD_* environment variable
    (shown as "env var" in each command's --help).
    """


def _register() -> None:
    # Command modules are imported here (not at package import) so `import oomguard`
    # stays free of CLI code.
    import importlib

    commands = ("run", "jobs", "upkeep", "oom", "doctor", "server", "client", "bench", "ui")
    for name in (*commands, "agent"):
        try:
            module = importlib.import_module(f"oomguard.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"oomguard.cli.{name}":
                continue
            raise
        module.register(cli)


def main(argv: list[str] | None = None) -> None:
    _register()
    cli.main(args=argv, prog_name="oomguard", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
