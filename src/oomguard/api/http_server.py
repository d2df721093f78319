"""How ``oomguard serve`` listens: uvicorn with read deadlines, a connection limit, TLS.

uvicorn closes a connection idle *between* requests (``timeout_keep_alive``) but has no
deadline for reading a request: a client that sends half its headers, or a byte of them
now and then, holds its connection (and a file descriptor) for ever. :class:`Deadlines`
adds two: the headers must be complete ``read_timeout`` seconds after the connection (or
the previous response), and the body ``read_timeout`` seconds after the headers; a
connection that misses one is closed. ``limit_concurrency`` answers 503 once about
``max_connections`` connections are open, until the deadlines have closed the slow ones.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from oomguard.errors import ConfigError
from oomguard.private_files import check_private

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listening:
    """How the server takes connections (``serve`` options)."""

    #: seconds a client has to send a request's headers, and then its body
    read_timeout: float = 30.0
    #: open connections (and requests in progress) past which requests get 503
    max_connections: int = 128
    #: seconds an idle keep-alive connection stays open between requests
    keep_alive: int = 5
    #: PEM certificate (chain) and private key: serve HTTPS
    tls_cert: str | None = None
    tls_key: str | None = None


class Deadlines(H11Protocol):
    """uvicorn's h11 protocol with a deadline for reading each request's headers and body."""

    read_timeout = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        before = self.conn.their_state
        super().handle_events()
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if before is not h11.SEND_BODY:
                self._arm()  # the headers are in: now the body has its own deadline
        elif state is not h11.IDLE:
            self._disarm()  # the request is read (or the connection is done with)

    def on_response_complete(self) -> None:
        # The next request's headers have their deadline from now (data a client sends
        # cancels uvicorn's keep-alive timer, so it alone would not end a slow request).
        self._arm()
        super().on_response_complete()
        if self.transport.is_closing():
            self._disarm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.debug("closing a connection that sent no whole request in %s s", self.read_timeout)
            self.transport.close()


def check_tls(cert: str, key: str) -> None:
    """Refuse (:class:`~oomguard.errors.ConfigError`) a key file others may read, and a
    certificate and key that do not load together, before anything starts."""
    check_private(key, "TLS key file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or err
        raise ConfigError(
            f"cannot use --tls-cert {cert!r} with --tls-key {key!r}: {reason}"
        ) from err


def protocol(read_timeout: float) -> type[Deadlines]:
    """:class:`Deadlines` with ``read_timeout`` (uvicorn makes one protocol per connection)."""
    return type("Deadlines", (Deadlines,), {"read_timeout": read_timeout})


def uvicorn_config(app: Callable[..., object], listening: Listening) -> uvicorn.Config:
    """The uvicorn config ``serve`` runs ``app`` with (its lifespan on, no access log)."""
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http=protocol(listening.read_timeout),
        limit_concurrency=listening.max_connections,
        timeout_keep_alive=listening.keep_alive,
        ssl_certfile=listening.tls_cert,
        ssl_keyfile=listening.tls_key,
    )


__all__ = ["Deadlines", "Listening", "check_tls", "protocol", "uvicorn_config"]
