"""``oomguard serve``: the scheduler, its workers and the HTTP API in one process."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

from oomguard.cli.exit_codes import ExitCode
from oomguard.cli.options import (
    allowed_host_option,
    config_option,
    env,
    lost_retries_option,
    notify_options,
    read_access,
    server_options,
    session_ttl_option,
    store_option,
    token_option,
    tokens_option,
    worker_options,
)
from oomguard.cli.process import Terminated, log_to_stderr, say, stop_on_sigterm
from oomguard.errors import ConfigError
from oomguard.store.location import shown as shown_store

if TYPE_CHECKING:
    import uvicorn

    from oomguard.api.service import ServerState

F = TypeVar("F", bound=Callable[..., object])
DEFAULT_LISTEN = "127.0.0.1:8765"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"--listen {value!r} is not HOST:PORT")
    host = host.strip("[]")
    if not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {value!r}: port out of range")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@store_option
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    **env("LISTEN"),
    help="HOST:PORT to serve on; an address other than loopback needs --token-file",
)
@server_options
@click.option(
    "--tasks-module",
    "tasks_modules",
    multiple=True,
    **env("TASKS_MODULE"),
    help="module whose functions may be submitted (repeat) [default: oomguard.examples]",
)
@token_option(
    "file holding the bearer token every request must send (the admin of every namespace)"
)
@tokens_option
@session_ttl_option
@allowed_host_option
@click.option(
    "--namespace-quota",
    "namespace_quotas",
    multiple=True,
    metavar="NS=N",
    **env("NAMESPACE_QUOTA"),
    help="pending-task quota of a namespace (repeat)",
)
@click.option(
    "--max-namespaces",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    **env("MAX_NAMESPACES"),
    help="namespaces without a quota that may have pending tasks at once (more get 429 "
    "too_many_namespaces)",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0.1, max=300),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    **env("READ_TIMEOUT"),
    help="a client has this long to send a request's headers, and then its body",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=2),
    default=128,
    show_default=True,
    **env("MAX_CONNECTIONS"),
    help="open connections past which requests get 503",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False),
    default=None,
    **env("TLS_CERT"),
    help="PEM certificate (chain): serve HTTPS (with --tls-key)",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False),
    default=None,
    **env("TLS_KEY"),
    help="PEM private key of --tls-cert (must be private to its owner: mode 600)",
)
@click.option(
    "--heap-profiling",
    is_flag=True,
    **env("HEAP_PROFILING"),
    help="trace allocations and serve /v1/debug/heap",
)
@click.option(
    "--commands",
    "commands_file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    **env("COMMANDS"),
    help="TOML or JSON file naming the programs submissions may run: NAME = argument "
    "template (a list, or a command line split into one), e.g. "
    'simulate = ["simulate", "--agents", "{n_agents}"]; nothing else runs as a command',
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    **env("MAX_RETRIES"),
    help="the most retries a submission may ask for",
)
@click.option(
    "--retention",
    default=None,
    metavar="DURATION",
    **env("RETENTION"),
    help="forget finished jobs older than this (e.g. 7d, 12h, 30m, 10s) and remove "
    "unreferenced blobs, periodically [default: the retention config key, else keep all]",
)
@click.option(
    "--replica/--no-replica",
    "replica",
    default=None,
    **env("REPLICA"),
    help="share the store with other live `serve --replica` processes (each takes over the "
    "dead ones; a replica that was taken over exits 13) instead of owning it alone "
    "[default: the replica config key, else no]",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0.5),
    default=None,
    metavar="SECONDS",
    **env("LEASE_TTL"),
    help="a scheduler that has not heartbeat for this long is dead: a replica takes over "
    "its attempts (lost) and tasks [default: the lease_ttl config key, else 30]",
)
@lost_retries_option
@worker_options
@notify_options
@config_option(
    "TOML config file to read (serve never reads an unnamed ./oomguard.toml: it says it "
    "ignores one)"
)
def serve(
    store: str,
    listen: str,
    workers: int | None,
    tasks_modules: tuple[str, ...],
    token_file: str | None,
    tokens_file: str | None,
    session_ttl: str,
    allowed_hosts: tuple[str, ...],
    max_pending_tasks: int,
    scheduler_memory_limit: str | None,
    namespace_quotas: tuple[str, ...],
    max_namespaces: int,
    read_timeout: float,
    max_connections: int,
    tls_cert: str | None,
    tls_key: str | None,
    heap_profiling: bool,
    lost_retries: int | None,
    commands_file: str | None,
    max_retries: int,
    retention: str | None,
    config_file: str | None,
    **options: object,
) -> None:
    """Run the scheduler, its workers and the HTTP API in one process.

    SIGTERM stops it cleanly (exit 0): running attempts end as interrupted and are run
    again by the next server. If the scheduler loop dies, /healthz and submissions answer
    503 scheduler_stopped and the server exits 13, for its supervisor to restart it.
    """
    import uvicorn

    from oomguard.api.app import (
        ServerSettings,
        ServerState,
        container_memory_limit,
        create_app,
        resolve_scheduler_memory_limit,
    )
    from oomguard.api.backpressure import parse_quotas
    from oomguard.api.commands import read_commands
    from oomguard.api.guard import server_names
    from oomguard.api.http_server import Listening, check_tls, uvicorn_config
    from oomguard.config import config_source, load_config
    from oomguard.notify.build import check_notifications
    from oomguard.ui.session import Sessions
    from oomguard.ui.web import add_ui
    from oomguard.units import format_size, parse_duration, parse_size

    host, port = parse_listen(listen)
    tenancy = read_access(token_file, tokens_file)
    ttl = parse_duration(session_ttl)
    if ttl <= 0:
        raise ConfigError(f"--session-ttl {session_ttl!r}: a session must last longer than 0 s")
    if tenancy.open and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without --token-file or --tokens-file: only "
            "loopback addresses may be served without a bearer token"
        )
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if tls_cert is not None and tls_key is not None:
        check_tls(tls_cert, tls_key)
    try:
        quotas = parse_quotas(namespace_quotas)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    commands = read_commands(commands_file) if commands_file else {}
    # Options (and their OOMGUARD_* variables) come through click: env={} here.
    source = config_source(config_file, env={})
    base_config = load_config(env={}, source=source)
    retention_s = parse_duration(retention) if retention else None
    limit = resolve_scheduler_memory_limit(
        parse_size(scheduler_memory_limit) if scheduler_memory_limit else None,
        container_memory_limit(),
    )
    settings = ServerSettings(
        store=store,
        workers=workers,
        task_modules=tasks_modules or ("oomguard.examples",),
        tenancy=tenancy,
        allowed_hosts=server_names(host, allowed_hosts),
        max_pending_tasks=max_pending_tasks,
        namespace_quotas=quotas,
        max_namespaces=max_namespaces,
        scheduler_memory_limit=limit,
        heap_profiling=heap_profiling,
        commands=commands,
        max_retries=max_retries,
        base_config=base_config,
        runner_options={
            k: v
            for k, v in {
                "lost_retries": lost_retries,
                "retention": retention_s,
                **options,
            }.items()
            if v is not None
        },
    )
    # The CLI's settings, else the named config file's (as the runner reads them): a bad
    # DSN or a secret file others may read is said before the store is opened.
    check_notifications(base_config.replace(**settings.runner_options))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {listen}: {err.strerror or err}") from None
    log_to_stderr()
    stop_on_sigterm()
    state: ServerState | None = None
    terminated = False
    try:
        state = ServerState(settings)
        log_to_stderr(state.runner.config.log_format)
        if source.note:
            say(source.note, state.runner.config.log_format)
        state.start()
        # Its lifespan stops the scheduler as uvicorn shuts down, before uvicorn re-raises
        # the signal that stopped it: cleanup must not wait for code after run().
        sessions = Sessions(ttl)
        app = create_app(state, sessions)
        add_ui(app, state.stores.get, tenancy, sessions)  # /ui/: behind the same guard
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        scheme = "https" if tls_cert else "http"
        serving = (
            f"serving on {scheme}://{shown}:{bound} (store {shown_store(store)}, "
            f"{state.runner.config.workers} workers, scheduler memory limit "
            f"{format_size(limit)}, max pending {max_pending_tasks}); "
            f"dashboard on {scheme}://{shown}:{bound}/ui/"
        )
        say(serving, state.runner.config.log_format)
        sys.stderr.flush()
        listening = Listening(
            read_timeout=read_timeout,
            max_connections=max_connections,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
        server = uvicorn.Server(uvicorn_config(app, listening))
        threading.Thread(
            target=_exit_when_scheduler_dies,
            args=(state, server),
            name="oomguard-serve-watch",
            daemon=True,
        ).start()
        server.run(sockets=[sock])
    except Terminated:
        terminated = True
    finally:
        sock.close()
        if state is not None:
            state.close()
    died = state.runner.died if state is not None else None
    log_format = state.runner.config.log_format if state is not None else "plain"
    if died is not None:
        say(
            f"the scheduler loop died ({type(died).__name__}: {died}; "
            "traceback above); the server stopped its workers and exits for its "
            "supervisor to restart it",
            log_format,
            logging.ERROR,
        )
        sys.exit(int(ExitCode.SCHEDULER_DIED))
    if terminated:
        say("stopped (SIGTERM)", log_format)


def _exit_when_scheduler_dies(state: ServerState, server: uvicorn.Server) -> None:
    """Shut uvicorn down once the scheduler loop died (until then submissions get 503)."""
    while not server.should_exit:
        if state.runner.died is not None:
            server.should_exit = True
            return
        time.sleep(0.1)


def register(cli: click.Group) -> None:
    cli.add_command(serve)


__all__ = ["register"]
