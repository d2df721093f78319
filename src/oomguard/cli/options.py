"""Options shared by several ``oomguard`` commands, declared once.

Every option has an ``OOMGUARD_*`` environment variable (a test enforces it); :func:`env`
spells it the same way everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, TypedDict, TypeVar, cast

import click

from oomguard.errors import ConfigError
from oomguard.units import parse_size

if TYPE_CHECKING:
    from oomguard.api.tenancy import Tenancy

F = TypeVar("F", bound=Callable[..., object])

STORE_HELP = (
    "SQLite store file, or a postgresql:// URL (created if missing; the URL's password is "
    "never printed)."
)
#: the help of --store for commands that only use a store that exists
EXISTING_STORE_HELP = (
    "SQLite store file, or a postgresql:// URL (it must exist: exit 4 if it does not)."
)


class EnvFallback(TypedDict):
    """The keyword arguments of an option's ``OOMGUARD_*`` fallback."""

    envvar: str
    show_envvar: bool


def env(name: str) -> EnvFallback:
    """``envvar=OOMGUARD_<NAME>`` shown in ``--help``."""
    return {"envvar": f"OOMGUARD_{name}", "show_envvar": True}


def size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A click callback: a memory size such as ``512MiB`` → bytes."""
    return None if value is None else parse_size(value)


def store_option(f: F) -> F:
    """``--store`` of a command that creates the store if it is missing (run, serve)."""
    return click.option("--store", default="oomguard.sqlite", help=STORE_HELP, **env("STORE"))(f)


def existing_store_option(f: F) -> F:
    """``--store`` of a command that reads or changes a store that exists."""
    return click.option(
        "--store", default="oomguard.sqlite", help=EXISTING_STORE_HELP, **env("STORE")
    )(f)


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


def tokens_option(f: F) -> F:
    """``--tokens-file``: tokens mapped to labels, roles and namespaces (``serve``, ``ui``)."""
    return click.option(
        "--tokens-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML file (mode 600) of tokens, each with a label, a role (read, submit, "
        "admin) and the namespaces it reaches: [tokens.LABEL] token=... role=... "
        'namespaces=["team-a"] (instead of --token-file)',
        **env("TOKENS_FILE"),
    )(f)


def session_ttl_option(f: F) -> F:
    """``--session-ttl``: how long a dashboard login lasts (``serve``, ``ui``)."""
    return click.option(
        "--session-ttl",
        default="8h",
        show_default=True,
        metavar="DURATION",
        help="how long a dashboard login lasts (e.g. 8h, 30m) before it must log in again",
        **env("SESSION_TTL"),
    )(f)


def read_access(token_file: str | None, tokens_file: str | None) -> Tenancy:
    """The tenancy of ``--token-file`` or ``--tokens-file`` (neither: open)."""
    from oomguard.api.app import read_token
    from oomguard.api.tenancy import Tenancy, read_tokens

    if token_file and tokens_file:
        raise ConfigError("--token-file and --tokens-file do not go together: choose one")
    if tokens_file:
        return read_tokens(tokens_file)
    return Tenancy.single(read_token(token_file) if token_file else None)


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
    ``--sentry-dsn-file``, ``--notify-url``, ``--notify-url-file``, ``--notify-on``,
    ``--notify-secret-file``, ``--redact``, ``--log-format``.

    The ``...-file`` options keep secrets out of ``/proc/PID/cmdline`` (which every local
    user may read): each file must be private to its owner, and what it holds is added to
    ``notify_url`` / ``sentry_dsn`` before the command runs.
    """

    @functools.wraps(f)
    def merged(
        *args: object, notify_url_file: str | None, sentry_dsn_file: str | None, **kwargs: object
    ) -> object:
        from oomguard.notify.secrets import read_lines, read_secret_file

        if notify_url_file:
            urls = read_lines(notify_url_file, "--notify-url-file")
            given = kwargs.get("notify_url")
            kwargs["notify_url"] = (*(given if isinstance(given, tuple) else ()), *urls)
        if sentry_dsn_file:
            if kwargs.get("sentry_dsn"):
                raise ConfigError("--sentry-dsn and --sentry-dsn-file do not go together")
            kwargs["sentry_dsn"] = read_secret_file(sentry_dsn_file, "--sentry-dsn-file")
        return f(*args, **kwargs)

    g: Callable[..., object] = merged
    g = click.option(
        "--log-format",
        type=click.Choice(["plain", "json"]),
        default=None,
        help="json: a JSON line on stderr per attempt end and job state change, and for "
        "every log record (for Loki, ELK, journald) [default: plain].",
        **env("LOG_FORMAT"),
    )(g)
    g = click.option(
        "--redact",
        multiple=True,
        callback=_none_if_empty,
        metavar="REGEX",
        help="Replace what matches REGEX with [redacted] in webhook bodies and Sentry "
        "events (repeat; the webhook URLs, DSN and keys themselves always are).",
        **env("REDACT"),
    )(g)
    g = click.option(
        "--notify-secret-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="File (mode 600) holding the key that signs webhooks (Standard Webhooks: "
        "webhook-signature); a second line: the next key, during a rotation.",
        **env("NOTIFY_SECRET_FILE"),
    )(g)
    g = click.option(
        "--notify-on",
        type=click.Choice(["failed", "final", "job"]),
        multiple=True,
        callback=_none_if_empty,
        help="What webhooks get (repeat): failed (every failed attempt), final (tasks "
        "that failed for good), job (jobs that finished) [default: final, job].",
        **env("NOTIFY_ON"),
    )(g)
    g = click.option(
        "--notify-outbox",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="Notices the store keeps for the webhooks at most (a receiver that is down "
        "gets them when it is back, after a restart too); past it the oldest are dropped "
        "and counted [default: 100000].",
        **env("NOTIFY_OUTBOX"),
    )(g)
    g = click.option(
        "--notify-url-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="File (mode 600) of webhook URLs, one a line: as --notify-url, but not "
        "visible in the process list.",
        **env("NOTIFY_URL_FILE"),
    )(g)
    g = click.option(
        "--notify-url",
        multiple=True,
        callback=_none_if_empty,
        metavar="URL",
        help="POST a signed JSON body per notification to URL (repeat for more). Prefer "
        "--notify-url-file or the environment: a URL here is visible to every local user.",
        **env("NOTIFY_URL"),
    )(g)
    g = click.option(
        "--sentry-dsn-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="File (mode 600) holding the Sentry DSN: as --sentry-dsn, but not visible "
        "in the process list.",
        **env("SENTRY_DSN_FILE"),
    )(g)
    decorated = click.option(
        "--sentry-dsn",
        default=None,
        metavar="DSN",
        help="Send every failed attempt to Sentry (needs: pip install 'oomguard[sentry]'). "
        "Prefer --sentry-dsn-file or the environment.",
        **env("SENTRY_DSN"),
    )(g)
    # functools.wraps kept f's name and signature for click; its options are added above
    return cast(F, decorated)


def worker_options(f: F) -> F:
    """How workers are limited and tasks retried (``run``, ``serve``): ``--worker-memory``,
    ``--memory-budget``, ``--isolation``, ``--worker-oom-score-adj``,
    ``--max-tasks-per-worker``, ``--timeout`` (into ``task_timeout``), ``--retries``."""
    f = click.option(
        "--timeout",
        "task_timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Seconds a task may run (tasks that declare their own timeout keep it) "
        "[default: no limit].",
        **env("TASK_TIMEOUT"),
    )(f)
    f = click.option(
        "--retries",
        type=click.IntRange(min=0),
        default=None,
        help="Retries after a task error or timeout (OOM kills are retried with more "
        "memory regardless) [default: 0].",
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
        help="Replace a worker after N tasks (0: never) [default: 0].",
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
        help="auto: a memory cgroup per worker where possible, else an RSS watchdog; "
        "cgroup or watchdog: only that [default: auto].",
        **env("ISOLATION"),
    )(f)
    return click.option(
        "--worker-memory",
        callback=size,
        default=None,
        help="The most any one attempt may use (its worker's kernel limit), e.g. 2GiB "
        "[default: the memory budget].",
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


class SectionedCommand(click.Command):
    """A command whose ``--help`` lists its options in sections (``sections``, set by a
    subclass: titles and the parameter names under each, in order); options in no section
    come last."""

    sections: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records: dict[str, tuple[str, str]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and param.name is not None:
                records[param.name] = record
        placed: set[str] = set()
        for title, names in self.sections:
            rows = [records[n] for n in names if n in records]
            placed.update(names)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        rest = [r for n, r in records.items() if n not in placed]
        if rest:
            with formatter.section("Other options"):
                formatter.write_dl(rest)


#: ``oomguard run --help``, in sections
RUN_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What to run", ("params_file", "cmd", "shell", "sets", "replicates", "aggregate", "name")),
    ("Where it is kept", ("store", "out")),
    (
        "Workers and memory",
        (
            "workers",
            "worker_memory",
            "memory_budget",
            "task_memory",
            "memory_key",
            "isolation",
            "worker_oom_score_adj",
            "max_tasks_per_worker",
            "batch_size",
        ),
    ),
    ("Retries and time limits", ("retries", "task_timeout", "lost_retries")),
    ("Dask", ("executor", "dask_address", "dask_isolation", "dask_local")),
    ("Notifications", ("sentry_dsn", "notify_url", "notify_on", "notify_secret_file")),
    ("Output", ("log_format", "as_json", "help")),
)
