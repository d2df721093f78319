"""The HTTP API of ``oomguard serve``: app factory, service state, submissions, routes, metrics,
backpressure, client."""

from __future__ import annotations

from oomguard.api.app import ServerSettings, ServerState, create_app

__all__ = ["ServerSettings", "ServerState", "create_app"]
