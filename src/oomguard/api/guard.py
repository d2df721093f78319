"""ASGI middleware in front of every route: who may ask, and how much they may send.

It runs before FastAPI reads a body, so a refused request is never parsed:

* **who is asking** (when the server has tokens, :mod:`~oomguard.api.tenancy`): a bearer
  token of the server, on every path but ``/healthz``; the dashboard's pages
  (``GET /ui/...``) also take the session cookie its login form sets (:data:`UI_COOKIE`,
  :mod:`~oomguard.ui.session`), which nothing else accepts; without either they answer 303
  to the login form. The caller's :class:`~oomguard.api.tenancy.Grant` is put in the
  request's state (``request.state.grant``) for the routes to check;
* **Host**: one of the names the server answers to (its listen address, ``localhost`` on
  loopback, ``--allowed-host``), so a DNS-rebinding page cannot reach the API by name;
* **Origin**: when a browser sends one, it must be the server's own (same host and port);
* **requests that change state** (POST, PUT, PATCH, DELETE) must say
  ``Content-Type: application/json`` or carry ``X-Oomguard-Client``: a page of another
  site can send neither without a CORS preflight, which this server never grants. The
  dashboard's forms, its login (``POST /ui/login``) and its actions
  (``POST /ui/actions/...``, which also take the session cookie and check a per-session
  CSRF token: :mod:`~oomguard.ui.actions`), must carry the server's own Origin;
* **no pickle**: pickle content types get 415 unread;
* **body size**: over the limit, refused from ``Content-Length``, or cut off as it arrives.

Every request that changes state and gets past these checks is written to the audit log
(the logger ``oomguard.audit``, one JSON object a line): the caller's label (never its
token), method, path, status and what the route added (``request.state.audit``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from contextlib import suppress
from http.cookies import CookieError, SimpleCookie
from typing import Protocol
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oomguard.api.http_errors import error_response
from oomguard.api.tenancy import ANONYMOUS, Grant, Tenancy

audit_log = logging.getLogger("oomguard.audit")

PICKLE_TYPES = (
    "application/octet-stream",
    "application/python-pickle",
    "application/x-pickle",
    "application/pickle",
    "application/x-python-pickle",
)
#: methods that change state: they need a JSON content type or :data:`CLIENT_HEADER`
CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: a header a browser cannot add to a cross-site request without a preflight
CLIENT_HEADER = "x-oomguard-client"
#: the dashboard's pages and its login form
UI_PREFIX = "/ui"
UI_LOGIN = "/ui/login"
UI_LOGOUT = "/ui/logout"
#: the dashboard's stylesheet and script (files of the package, the same for everyone)
UI_STATIC = "/ui/static/"
#: the dashboard's actions: a form POST with the session cookie, same Origin, CSRF token
UI_ACTIONS = "/ui/actions/"
#: the cookie the login form sets; accepted for ``GET`` of the dashboard's pages only
UI_COOKIE = "oomguard_ui"
FORM_TYPE = "application/x-www-form-urlencoded"


class SessionLookup(Protocol):
    """The dashboard's sessions (:class:`oomguard.ui.session.Sessions`), as the guard
    reads them."""

    def grant(self, sid: str) -> Grant | None: ...


def is_ui_path(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def host_name(value: str) -> str:
    """The host of a ``Host`` header or netloc, lower case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") > 1:
        return value  # a bare IPv6 address (a Host header brackets it)
    name, sep, port = value.rpartition(":")
    return name if sep and port.isdigit() else value


def server_names(listen_host: str, extra: Collection[str] = ()) -> tuple[str, ...] | None:
    """The names a request's Host may give for a server listening on ``listen_host``.

    Its own address, ``localhost`` when that is a loopback address, and ``extra``
    (``--allowed-host``). None (any Host) for a wildcard address (``0.0.0.0``, ``::``)
    with no ``extra``: such a server needs a bearer token, which a rebinding page lacks.
    """
    import ipaddress

    host = host_name(listen_host)
    names = {host_name(name) for name in extra if name.strip()}
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        return tuple(sorted(names)) if names else None
    names.add(host)
    if host == "localhost" or (address is not None and address.is_loopback):
        names.update(("localhost", "127.0.0.1", "::1") if host == "localhost" else ("localhost",))
    return tuple(sorted(names))


class Guard:
    """ASGI middleware: caller, Host, Origin, state-changing requests, pickle, body size.

    ``tenancy``: the server's tokens (:meth:`Tenancy.single` of None: open, every request
    is :data:`~oomguard.api.tenancy.ANONYMOUS`); ``sessions``: the dashboard's logins;
    ``allowed_hosts``: the host names (no ports) a request's ``Host`` may name; None: any
    (an app built in process, or a wildcard listen address behind a token).
    """

    def __init__(
        self,
        app: ASGIApp,
        tenancy: Tenancy,
        max_bytes: int,
        allowed_hosts: Collection[str] | None = None,
        sessions: SessionLookup | None = None,
    ) -> None:
        self.app = app
        self.tenancy = tenancy
        self.sessions = sessions
        self.max_bytes = max_bytes
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        state: dict[str, object] = scope.setdefault("state", {})
        refusal = self._refusal(scope, headers, state)
        if refusal is not None:
            status, code, message, extra = refusal
            await error_response(status, code, message, headers=extra)(scope, receive, send)
            return
        seen = 0
        too_large = False
        answered = 500

        async def counted() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    raise _TooLarge
            return message

        async def watch(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = int(message["status"])
            if not too_large:  # the app's answer to a cut-off body is replaced below
                await send(message)

        try:
            with suppress(_TooLarge):
                await self.app(scope, counted, watch)
            if too_large:
                answered = 413
                await error_response(
                    413,
                    "payload_too_large",
                    f"request body is over the {self.max_bytes} byte limit",
                )(scope, receive, send)
        finally:
            if scope["method"] in CHANGING:
                _audit(scope, state, answered)

    def _refusal(
        self, scope: Scope, headers: Mapping[str, str], state: dict[str, object]
    ) -> tuple[int, str, str, dict[str, str] | None] | None:
        """(status, code, message, headers) of the refusal, or None: the request may pass
        (and ``state["grant"]`` is its caller)."""
        host = headers.get("host", "")
        if self.allowed_hosts is not None and host_name(host) not in self.allowed_hosts:
            return (
                403,
                "host_not_allowed",
                f"Host {host[:100]!r} is not a name of this server (serve --allowed-host)",
                None,
            )
        origin = headers.get("origin")
        if origin is not None and not self._same_origin(origin, host):
            return (
                403,
                "origin_not_allowed",
                f"requests from {origin[:100]!r} are not allowed: only the server's own origin",
                None,
            )
        path, method = scope["path"], scope["method"]
        page = is_ui_path(path) and method in ("GET", "HEAD")
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        # The login form, logout (and the stylesheet and script of the package they use)
        # are what may come without the token.
        login = path in (UI_LOGIN, UI_LOGOUT) and (page or method == "POST")
        public = login or (page and path.startswith(UI_STATIC))
        # An action's POST takes the session cookie only with the server's own Origin
        # (checked above); the route checks its CSRF token.
        action = path.startswith(UI_ACTIONS) and method == "POST" and origin is not None
        grant = self._caller(headers, page or action)
        if grant is not None:
            state["grant"] = grant
        elif path != "/healthz" and not public:
            if page:
                return (303, "login_required", "log in first", {"Location": UI_LOGIN})
            return (
                401,
                "unauthorized",
                "a bearer token of this server is required",
                {"WWW-Authenticate": "Bearer"},
            )
        if ctype in PICKLE_TYPES or "pickle" in ctype:
            return (
                415,
                "unsupported_media_type",
                "pickled payloads are never accepted: send JSON arguments",
                None,
            )
        json_type = ctype == "application/json" or ctype.endswith("+json")
        client = CLIENT_HEADER in headers and not ctype
        # A form is accepted only for the login, logout and the actions, and only with the
        # server's own Origin (checked above): a page of another site cannot log a browser
        # in or out, nor act for it.
        form = (login or action) and method == "POST" and ctype == FORM_TYPE and origin is not None
        if method in CHANGING and not json_type and not client and not form:
            return (
                415,
                "unsupported_media_type",
                f"content type {ctype[:100]!r} is not supported: send application/json"
                if ctype
                else "a request that changes state needs Content-Type: application/json "
                "(or an X-Oomguard-Client header)",
                None,
            )
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return (
                413,
                "payload_too_large",
                f"request body of {length[:20]} bytes is over the {self.max_bytes} limit",
                None,
            )
        return None

    def _caller(self, headers: Mapping[str, str], page: bool) -> Grant | None:
        """Who asks: the grant of its bearer token (or, for a page, of its session)."""
        if self.tenancy.open:
            return ANONYMOUS
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            grant = self.tenancy.identify(value.strip())
            if grant is not None:
                return grant
        if page and self.sessions is not None:
            sid = session_id(headers)
            if sid:
                return self.sessions.grant(sid)
        return None

    @staticmethod
    def _same_origin(origin: str, host: str) -> bool:
        # "null" (a sandboxed page, a file) and anything unparsable are foreign.
        try:
            parts = urlsplit(origin.strip())
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc or not host:
            return False
        return parts.netloc.lower() == host.strip().lower()


def session_id(headers: Mapping[str, str]) -> str | None:
    """The dashboard session id in a request's cookies (None: none, or unreadable)."""
    try:
        cookie = SimpleCookie(headers.get("cookie", ""))
    except CookieError:
        return None
    morsel = cookie.get(UI_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def _audit(scope: Scope, state: Mapping[str, object], status: int) -> None:
    grant = state.get("grant")
    client = scope.get("client")
    extra = state.get("audit")
    line: dict[str, object] = {
        "audit": "request",
        "label": grant.label if isinstance(grant, Grant) else None,
        "method": scope["method"],
        "path": scope["path"][:200],
        "status": status,
        "client": client[0] if client else None,
        **(extra if isinstance(extra, dict) else {}),
    }
    audit_log.info("%s", json.dumps(line, sort_keys=True))


class _TooLarge(Exception):
    pass


__all__ = [
    "CHANGING",
    "CLIENT_HEADER",
    "PICKLE_TYPES",
    "UI_ACTIONS",
    "UI_COOKIE",
    "UI_LOGIN",
    "UI_LOGOUT",
    "Guard",
    "SessionLookup",
    "host_name",
    "is_ui_path",
    "server_names",
    "session_id",
]
