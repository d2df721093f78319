"""``oomguard ui``: the web dashboard alone, over a store opened read-only."""

from __future__ import annotations

import socket
import sys

import click

from oomguard.cli.options import (
    allowed_host_option,
    env,
    read_access,
    session_ttl_option,
    token_option,
    tokens_option,
)
from oomguard.cli.process import Terminated, log_to_stderr, say, stop_on_sigterm
from oomguard.cli.server import is_loopback, parse_listen
from oomguard.errors import ConfigError
from oomguard.store.location import shown as shown_store

DEFAULT_UI_LISTEN = "127.0.0.1:8766"


@click.command("ui")
@click.option(
    "--store",
    default="oomguard.sqlite",
    **env("STORE"),
    help="the store to show (opened read-only: never created, never written)",
)
@click.option(
    "--listen",
    default=DEFAULT_UI_LISTEN,
    show_default=True,
    **env("UI_LISTEN"),
    help="HOST:PORT to serve the dashboard on (port 0: any free port); an address other "
    "than loopback needs --token-file",
)
@token_option("file holding a token the dashboard's login form asks for")
@tokens_option
@session_ttl_option
@allowed_host_option
def ui(
    store: str,
    listen: str,
    token_file: str | None,
    tokens_file: str | None,
    session_ttl: str,
    allowed_hosts: tuple[str, ...],
) -> None:
    """Serve the web dashboard (/ui/) over a store, read-only.

    The store is opened read-only (nothing is ever written to it): this is safe beside
    the `oomguard run` or `serve` that writes it, and shows what it does as it does it.
    """
    import uvicorn

    from oomguard.api.guard import server_names
    from oomguard.api.http_server import Listening, uvicorn_config
    from oomguard.ui.session import Sessions
    from oomguard.ui.web import create_ui_app
    from oomguard.units import parse_duration

    host, port = parse_listen(listen)
    tenancy = read_access(token_file, tokens_file)
    ttl = parse_duration(session_ttl)
    if ttl <= 0:
        raise ConfigError(f"--session-ttl {session_ttl!r}: a session must last longer than 0 s")
    if tenancy.open and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the dashboard on {host} without --token-file or "
            "--tokens-file: only loopback addresses may be served without a token"
        )
    app, stores = create_ui_app(
        store,
        allowed_hosts=server_names(host, allowed_hosts),
        tenancy=tenancy,
        sessions=Sessions(ttl),
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ConfigError(f"cannot listen on {listen}: {err.strerror or err}") from None
        log_to_stderr()
        stop_on_sigterm()
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        say(
            f"dashboard on http://{shown}:{sock.getsockname()[1]}/ui/ "
            f"(store {shown_store(store)}, read-only)",
            "plain",
        )
        sys.stderr.flush()
        server = uvicorn.Server(uvicorn_config(app, Listening()))
        server.run(sockets=[sock])
    except Terminated:
        say("stopped (SIGTERM)", "plain")
    finally:
        sock.close()
        stores.close()


def register(cli: click.Group) -> None:
    cli.add_command(ui)


__all__ = ["register"]
