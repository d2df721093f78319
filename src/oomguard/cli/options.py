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


def config_option(help: str) -> Callable[[F], F]:
    """``--config FILE`` (into ``config_file``): the config file to read (``OOMGUARD_CONFIG``)."""
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        default=None,
        help=help,
        **env("CONFIG"),
    )


def json_option(help: str = "Print JSON.", name: str = "JSON") -> Callable[[F], F]:
    """``--json`` (into the parameter ``as_json``), with the envvar ``OOMGUARD_<name>``."""
    return click.option("--json", "as_json", is_flag=True, help=help, **env(name))


def token_option(help: str = "file holding the server's bearer token") -> Callable[[F], F]:
    """``--token-file``: the bearer token a server requires (or, for ``serve``, checks)."""
    return click.option(
        "--token-file",
        type=click.Path(dir_okay=False),
        default=None,
        help=help,
        **env("TOKEN_FILE"),
    )


#: ``--allowed-host`` of the commands that serve HTTP (``serve``, ``ui``)
allowed_host_option = click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    **env("ALLOWED_HOST"),
    help="a host name requests may name in their Host header, besides the listen address "
    "(and localhost on loopback) (repeat)",
)


def lost_retries_option(f: F) -> F:
    """``--lost-retries`` of the scheduler a command runs (``run``, ``serve``)."""
    return click.option(
        "--lost-retries",
        type=click.IntRange(min=0),
        default=None,
        help="Attempts of a task that may end lost (their scheduler or host died) before "
        "it fails as lost [default: 5].",
        **env("LOST_RETRIES"),
    )(f)


def _server_options(workers_help: str, pending_help: str, memory_help: str) -> Callable[[F], F]:
    """``--workers``, ``--max-pending-tasks``, ``--scheduler-memory-limit`` of a server
    (``serve`` runs one; ``bench`` starts one)."""

    def decorate(f: F) -> F:
        f = click.option(
            "--scheduler-memory-limit",
            default=None,
            metavar="SIZE",
            help=memory_help,
            **env("SCHEDULER_MEMORY_LIMIT"),
        )(f)
        f = click.option(
            "--max-pending-tasks",
            type=click.IntRange(min=1),
            default=100_000,
            show_default=True,
            help=pending_help,
            **env("MAX_PENDING_TASKS"),
        )(f)
        return click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help=workers_help,
            **env("WORKERS"),
        )(f)

    return decorate


#: for ``oomguard serve``
server_options = _server_options(
    "worker processes [default: CPU count]",
    "accepted-but-unfinished tasks over which submissions get 429 queue_full",
    "the server's own memory limit [default: half the container limit, or 1GiB]",
)
#: for ``oomguard bench``, passed on to the server it starts
started_server_options = _server_options(
    "workers of the started server",
    "--max-pending-tasks of the started server",
    "--scheduler-memory-limit of the started server",
)


def _none_if_empty(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...] | None:
    # An option not given must not override oomguard.toml with an empty list.
    return value or None


def notify_options(f: F) -> F:
    """Where failures are reported (``run``, ``serve``): ``--sentry-dsn``,
    ``--notify-url``, ``--notify-on``, ``--notify-secret-file``, ``--log-format``."""
    f = click.option(
        "--log-format",
        type=click.Choice(["plain", "json"]),
        default=None,
        help="json: a JSON line on stderr per attempt end and job state change, and for "
        "every log record (for Loki, ELK, journald) [default: plain].",
        **env("LOG_FORMAT"),
    )(f)
    f = click.option(
        "--notify-secret-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="File holding the key that signs webhook bodies (HMAC-SHA256, header "
        "X-Oomguard-Signature).",
        **env("NOTIFY_SECRET_FILE"),
    )(f)
    f = click.option(
        "--notify-on",
        type=click.Choice(["failed", "final", "job"]),
        multiple=True,
        callback=_none_if_empty,
        help="What webhooks get (repeat): failed (every failed attempt), final (tasks "
        "that failed for good), job (jobs that finished) [default: final, job].",
        **env("NOTIFY_ON"),
    )(f)
    f = click.option(
        "--notify-url",
        multiple=True,
        callback=_none_if_empty,
        metavar="URL",
        help="POST a signed JSON body per notification to URL (repeat for more).",
        **env("NOTIFY_URL"),
    )(f)
    return click.option(
        "--sentry-dsn",
        default=None,
        metavar="DSN",
        help="Send every failed attempt to Sentry (needs: pip install 'oomguard[sentry]').",
        **env("SENTRY_DSN"),
    )(f)


def worker_options(f: F) -> F:
    """How workers are limited and tasks retried (``run``, ``serve``): ``--worker-memory``,
    ``--memory-budget``, ``--isolation``, ``--worker-oom-score-adj``,
    ``--max-tasks-per-worker``, ``--timeout`` (into ``task_timeout``), ``--retries``."""
    f = click.option(
        "--timeout",
        "task_timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Seconds a task may run (tasks that declare their own timeout keep it).",
        **env("TASK_TIMEOUT"),
    )(f)
    f = click.option(
        "--retries",
        type=click.IntRange(min=0),
        default=None,
        help="Retries after a task error or timeout.",
        **env("RETRIES"),
    )(f)
    f = click.option(
        "--memory-budget",
        callback=size,
        default=None,
        help="Memory the scheduler may hand out "
        "[default: machine or container limit minus a reserve].",
        **env("MEMORY_BUDGET"),
    )(f)
    f = click.option(
        "--max-tasks-per-worker",
        type=click.IntRange(min=0),
        default=None,
        help="Replace a worker after N tasks (0: never).",
        **env("MAX_TASKS_PER_WORKER"),
    )(f)
    f = click.option(
        "--worker-oom-score-adj",
        type=click.IntRange(0, 1000),
        default=None,
        help="oom_score_adj of workers, so the kernel kills them first [default: 800].",
        **env("WORKER_OOM_SCORE_ADJ"),
    )(f)
    f = click.option(
        "--isolation",
        type=click.Choice(["auto", "cgroup", "watchdog"]),
        default=None,
        help="auto: a memory cgroup per worker where possible, else an RSS watchdog.",
        **env("ISOLATION"),
    )(f)
    return click.option(
        "--worker-memory",
        callback=size,
        default=None,
        help="The most any one attempt may use (its worker's kernel limit), e.g. 2GiB.",
        **env("WORKER_MEMORY"),
    )(f)


#: the keys of :func:`worker_options` (parameter names)
WORKER_OPTION_NAMES = (
    "worker_memory",
    "memory_budget",
    "isolation",
    "worker_oom_score_adj",
    "max_tasks_per_worker",
    "task_timeout",
    "retries",
)
