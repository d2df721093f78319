"""ASGI middleware in front of every route: bearer token, no pickle bodies, body size limit.

It runs before FastAPI reads a body, so a refused request is never parsed: pickle content
types get 415 unread, and a body over the limit is cut off as it arrives (413).
"""

from __future__ import annotations

import secrets
from contextlib import suppress

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oomguard.api.http_errors import error_response

PICKLE_TYPES = (
    "application/octet-stream",
    "application/python-pickle",
    "application/x-pickle",
    "application/pickle",
    "application/x-python-pickle",
)


class Guard:
    """ASGI middleware: bearer token, refusal of pickle bodies, request size limit."""

    def __init__(self, app: ASGIApp, token: str | None, max_bytes: int) -> None:
        self.app = app
        self.token = token
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        if self.token is not None and scope["path"] != "/healthz":
            given = headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(
                value.strip().encode(), self.token.encode()
            ):
                await error_response(
                    401,
                    "unauthorized",
                    "a bearer token is required",
                    headers={"WWW-Authenticate": "Bearer"},
                )(scope, receive, send)
                return
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope["method"] in ("POST", "PUT", "PATCH") and ctype:
            if ctype in PICKLE_TYPES or "pickle" in ctype:
                await error_response(
                    415,
                    "unsupported_media_type",
                    "pickled payloads are never accepted: send JSON arguments",
                )(scope, receive, send)
                return
            if ctype != "application/json" and not ctype.endswith("+json"):
                await error_response(
                    415,
                    "unsupported_media_type",
                    f"content type {ctype!r} is not supported: send application/json",
                )(scope, receive, send)
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await error_response(
                413,
                "payload_too_large",
                f"request body of {length} bytes is over the {self.max_bytes} limit",
            )(scope, receive, send)
            return
        seen = 0
        too_large = False

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
            if not too_large:  # the app's answer to a cut-off body is replaced below
                await send(message)

        with suppress(_TooLarge):
            await self.app(scope, counted, watch)
        if too_large:
            await error_response(
                413, "payload_too_large", f"request body is over the {self.max_bytes} byte limit"
            )(scope, receive, send)


class _TooLarge(Exception):
    pass


__all__ = ["PICKLE_TYPES", "Guard"]
