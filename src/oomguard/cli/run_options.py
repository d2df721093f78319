"""The options of ``oomguard run``, apart from the command: they are also the keys a spec
file may set. :data:`RUN_OPTIONS` is that schema (what :mod:`oomguard.cli.spec` checks a
spec's keys against), so a spec is read without the ``run`` command (``submit`` reads one
too) and no module needs the command to know what a job may say."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import click

from oomguard.cli.options import (
    config_option,
    json_option,
    lost_retries_option,
    notify_options,
    size,
    store_option,
    worker_options,
)

F = TypeVar("F", bound=Callable[..., object])

# Top to bottom as they were written above the command; applied bottom-up as click does.
_DECORATORS: tuple[Callable[[Callable[..., object]], Callable[..., object]], ...] = (
    click.option(
        "--params",
        "params_file",
        default=None,
        envvar="OOMGUARD_PARAMS",
        show_envvar=True,
        help="JSON Lines file: one object of keyword arguments a line.",
    ),
    click.option(
        "--cmd",
        default=None,
        envvar="OOMGUARD_CMD",
        show_envvar=True,
        help="Run a program instead of TASK: a command line whose {NAME} fields are "
        "parameters, e.g. 'simulate --agents {n_agents} --seed {replicate}' (an argument "
        "list: no shell, unless --shell).",
    ),
    click.option(
        "--shell",
        is_flag=True,
        default=None,
        envvar="OOMGUARD_SHELL",
        show_envvar=True,
        help="Run --cmd through /bin/sh (parameters are quoted for it).",
    ),
    click.option(
        "--name",
        default=None,
        envvar="OOMGUARD_NAME",
        show_envvar=True,
        help="The job's name: running a job of the same name (and task) again resumes it "
        "[default: from the parameters].",
    ),
    click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="KEY=VALUE",
        envvar="OOMGUARD_SET",
        show_envvar=True,
        help="Change a key of the spec file (repeat); grid.NAME=[...] changes a grid list. "
        "Options given on the command line win over the file.",
    ),
    click.option(
        "--replicates",
        type=click.IntRange(min=1),
        default=None,
        envvar="OOMGUARD_REPLICATES",
        show_envvar=True,
        help="Run each parameter set R times, as fn(**params, replicate=i).",
    ),
    click.option(
        "--aggregate",
        "aggregate",
        default=None,
        envvar="OOMGUARD_AGGREGATE",
        show_envvar=True,
        help="AGG (module:function or file.py:function) called as "
        "agg(params, results) once a parameter set's replicates succeeded.",
    ),
    store_option,
    click.option(
        "--out",
        default=None,
        envvar="OOMGUARD_OUT",
        show_envvar=True,
        help="Directory for Parquet results (OUT/tasks, OUT/aggregates).",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        envvar="OOMGUARD_WORKERS",
        show_envvar=True,
        help="Worker processes [default: CPU count].",
    ),
    click.option(
        "--task-memory",
        callback=size,
        default=None,
        envvar="OOMGUARD_TASK_MEMORY",
        show_envvar=True,
        help="Declared memory estimate for every task of the run.",
    ),
    click.option(
        "--memory-key",
        default=None,
        envvar="OOMGUARD_MEMORY_KEY",
        show_envvar=True,
        help="Parameter whose value keys learned memory estimates, e.g. n_agents.",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=None,
        envvar="OOMGUARD_BATCH_SIZE",
        show_envvar=True,
        help="Most parameter groups (replicates + aggregation) open at once.",
    ),
    lost_retries_option,
    worker_options,
    click.option(
        "--executor",
        type=click.Choice(["local", "dask"]),
        default=None,
        envvar="OOMGUARD_EXECUTOR",
        show_envvar=True,
        help="Where attempts run.",
    ),
    click.option(
        "--dask-address",
        default=None,
        envvar="OOMGUARD_DASK_ADDRESS",
        show_envvar=True,
        help="tcp://host:port of a Dask scheduler (with --executor dask).",
    ),
    click.option(
        "--dask-isolation",
        type=click.Choice(["auto", "cgroup", "watchdog", "thread"]),
        default=None,
        envvar="OOMGUARD_DASK_ISOLATION",
        show_envvar=True,
        help="Where attempts run on a Dask worker: auto (a child process in its own memory "
        "cgroup, else under the RSS watchdog), cgroup, watchdog, or thread (in the Dask "
        "worker itself: nothing isolated).",
    ),
    click.option(
        "--dask-local",
        type=click.IntRange(min=1),
        default=None,
        envvar="OOMGUARD_DASK_LOCAL",
        show_envvar=True,
        help="Start a local Dask cluster of N workers to try the dask executor.",
    ),
    notify_options,
    config_option(
        "TOML config file to read; without it ./oomguard.toml is read only if you own it and "
        "only you may write it, and it may not set where oomguard connects (dask_address, "
        "kernel_log, notify_url, sentry_dsn, executor)"
    ),
    json_option("Print one JSON object at the end."),
)


def run_options(f: F) -> F:
    """Every option of ``oomguard run`` (not its TASK argument), as stacked decorators."""
    for decorate in reversed(_DECORATORS):
        f = cast(F, decorate(f))
    return f


def _parameters() -> tuple[click.Parameter, ...]:
    def holder() -> None:
        """Carries the options; never called."""

    params: list[click.Parameter] = getattr(run_options(holder), "__click_params__", [])
    return tuple(reversed(params))


#: the options of ``run`` in the order ``--help`` shows them: the keys of a spec file
RUN_OPTIONS: tuple[click.Parameter, ...] = _parameters()

__all__ = ["RUN_OPTIONS", "run_options"]
