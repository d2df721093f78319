"""An httpx client for an ``oomguard serve`` server, used by the CLI commands.

A 429 answer is retried with exponential backoff that honours ``Retry-After``; when the
retries are spent it raises :class:`~oomguard.errors.BackpressureError`. A server that
cannot be reached raises :class:`ServerConnectionError`; any other error answer raises
:class:`ApiError` carrying the status and the error code of the body.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

import httpx

from oomguard.errors import BackpressureError, OomguardError, ServerConnectionError
from oomguard.jobs.jsonvalue import JSONObject
from oomguard.private_files import read_private

#: a query parameter's value
Param = str | int | float | bool


class ApiError(OomguardError):
    """The server answered with an error (``status``, ``code``)."""


def load_token(token_file: str | None) -> str | None:
    """The token in ``token_file`` (which must be private to its owner), or None."""
    if token_file is None:
        return None
    return read_private(token_file, "token file") or None


class ApiClient:
    """``ApiClient("http://127.0.0.1:8765", token=...)``; use as a context manager."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 8,
        backoff: float = 0.25,
        max_delay: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url = url.rstrip("/")
        # The header a browser page of another site cannot send without a preflight: the
        # server requires it (or a JSON body) on requests that change state.
        headers = {"X-Oomguard-Client": "oomguard"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.retries = retries
        self.backoff = backoff
        self.max_delay = max_delay
        self.sleep = sleep

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: Mapping[str, Param] | None = None,
        retry: bool = True,
    ) -> httpx.Response:
        """One request; a 429 is retried (when ``retry``); other errors raise."""
        attempt = 0
        while True:
            try:
                response = self.http.request(method, path, json=json, params=params)
            except httpx.TransportError as err:
                raise ServerConnectionError(
                    f"cannot reach the oomguard server at {self.url}: {err}", url=self.url
                ) from err
            if response.status_code != 429:
                break
            code, message = _error_of(response)
            if not retry or attempt >= self.retries:
                raise BackpressureError(
                    f"the server refused the submission ({code}) after {attempt + 1} "
                    f"attempt(s): {message}",
                    code=code,
                    retry_after=_retry_after(response),
                )
            delay = min(self.max_delay, self.backoff * 2**attempt)
            hinted = _retry_after(response)
            if hinted is not None:
                delay = max(delay, min(hinted, self.max_delay))
            self.sleep(delay * random.uniform(1.0, 1.25))  # jitter: clients spread out
            attempt += 1
        if response.status_code >= 400:
            code, message = _error_of(response)
            raise ApiError(
                f"server answered {response.status_code} ({code}): {message}",
                status=response.status_code,
                code=code,
            )
        return response

    def get(self, path: str, **params: Param | None) -> JSONObject:
        """The JSON object a GET of ``path`` answers (parameters that are None left out)."""
        response = self.send("GET", path, params={k: v for k, v in params.items() if v is not None})
        return _object(response)

    def post(self, path: str, body: object = None, *, retry: bool = True) -> JSONObject:
        """The JSON object a POST of ``body`` to ``path`` answers."""
        return _object(self.send("POST", path, json=body, retry=retry))

    def metrics(self) -> str:
        return self.send("GET", "/metrics").text


def _object(response: httpx.Response) -> JSONObject:
    # Every answer of the API is a JSON object: anything else is not the API's.
    value = response.json()
    if not isinstance(value, dict):
        raise ApiError(
            f"server answered {response.status_code} with JSON that is not an object",
            status=response.status_code,
            code="not_an_object",
        )
    return value


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        err = response.json()["error"]
        return str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        return "http_" + str(response.status_code), response.text[:200]


def parse_metric(text: str, name: str) -> float | None:
    """The value of an unlabelled sample ``name`` in Prometheus text, if present."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


__all__ = ["ApiClient", "ApiError", "ServerConnectionError", "load_token", "parse_metric"]
