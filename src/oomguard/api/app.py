"""The HTTP API: :func:`create_app` over a :class:`ServerState` (runner + backpressure).

Tasks arrive as ``module:function`` references from the allowed task modules with JSON
arguments, are written to the store (``params``, or a blob file when large), and run as
``fn(**args)``. Nothing from the network is ever unpickled: pickle bodies are refused with
415 before they are read.

The parts: :mod:`~oomguard.api.service` (the state), :mod:`~oomguard.api.submissions`
(``POST /v1/jobs``), :mod:`~oomguard.api.routes`, :mod:`~oomguard.api.guard` (the
middleware) and :mod:`~oomguard.api.http_errors`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from oomguard.api.access import no_unknown_params
from oomguard.api.guard import Guard, SessionLookup
from oomguard.api.http_errors import RESPONSES, add_error_handlers
from oomguard.api.routes import add_routes
from oomguard.api.service import (
    ServerSettings,
    ServerState,
    container_memory_limit,
    resolve_scheduler_memory_limit,
    serving_state,
)
from oomguard.errors import ConfigError
from oomguard.private_files import read_private


def create_app(state: ServerState, sessions: SessionLookup | None = None) -> FastAPI:
    """The FastAPI app over a started :class:`ServerState` (``sessions``: the dashboard's
    logins, when the server has one).

    Served with a lifespan, the app closes the state when the server shuts down (the
    scheduler ends its running attempts as interrupted and stops its workers), before
    uvicorn re-raises the signal that stopped it.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(state.close)

    app = FastAPI(
        title="oomguard",
        version="1",
        responses=RESPONSES,
        lifespan=lifespan,
        dependencies=[Depends(no_unknown_params)],
    )
    app.state.oomguard = state
    add_error_handlers(app, state.metrics)
    add_routes(app, state)
    settings = state.settings
    app.add_middleware(
        Guard,
        tenancy=settings.access(),
        max_bytes=settings.max_request_bytes,
        allowed_hosts=settings.allowed_hosts,
        sessions=sessions,
    )
    return app


def read_token(path: str | os.PathLike[str]) -> str:
    """The bearer token in the file at ``path`` (at least 16 characters; the file must be
    private to its owner, :func:`~oomguard.private_files.read_private`)."""
    token = read_private(path, "token file")
    if len(token) < 16:
        raise ConfigError(f"token file {str(path)!r} holds less than 16 characters")
    return token


__all__ = [
    "ServerSettings",
    "ServerState",
    "container_memory_limit",
    "create_app",
    "read_token",
    "resolve_scheduler_memory_limit",
    "serving_state",
]
