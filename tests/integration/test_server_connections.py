"""Connection hygiene of a real `oomguard serve` on 127.0.0.1: a client that sends its
request slowly (half the headers, a byte now and then, half the body) is disconnected at
the read deadline, and past --max-connections new requests get 503 instead of piling up.
(Before, partial headers were held past 30 s, with no limit on connections.)"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from fixtures.polling import wait_for
from fixtures.serve_process import Served, serve

#: the deadline the server runs with here; a test waits at most WAIT for it to act
READ_TIMEOUT = 2.0
WAIT = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("connections")
    # through their environment variables
    env = {"OOMGUARD_READ_TIMEOUT": str(READ_TIMEOUT), "OOMGUARD_MAX_CONNECTIONS": "6"}
    with serve(tmp, "--workers", "1", env=env) as served:
        yield served


def connect(served: Served) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=WAIT)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (reading until it does, or WAIT passes)."""
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_partial_headers_are_cut_off(server: Served) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
        assert closed_by_server(sock)


def test_partial_headers_of_a_second_request_are_cut_off(server: Served) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # keep-alive, half
        assert closed_by_server(sock)


def test_trickled_headers_are_cut_off(server: Served) -> None:
    # A byte every 0.5 s: never idle, never done. The deadline counts from the start.
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.settimeout(0.5)
        until = time.monotonic() + WAIT
        closed = False
        while time.monotonic() < until and not closed:
            try:
                sock.sendall(b"X")
                closed = sock.recv(4096) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        assert closed


def test_partial_body_is_cut_off(server: Served) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"task":'
        )
        assert closed_by_server(sock)


def test_connections_past_the_limit_get_503(server: Served) -> None:
    with contextlib.ExitStack() as stack:
        held = []
        for _ in range(6):
            sock = stack.enter_context(connect(server))
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # partial: held open
            held.append(sock)
        r = httpx.get(f"{server.url}/healthz", timeout=WAIT)
        assert r.status_code == 503
        # Once the deadline has closed the slow ones, requests are answered again.
        assert all(closed_by_server(sock) for sock in held)
    wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 200, timeout=WAIT)
