"""The dashboard's login sessions, and the back-off that slows guessing at its login form.

A login (``POST /ui/login`` with a token of the server) starts a session: a random id
(256 bits) kept in this process with the caller's :class:`~oomguard.api.tenancy.Grant`
and an expiry, sent as an HttpOnly, SameSite=Strict cookie. The cookie is never derived
from the token, expires (``ttl``), and ends at logout (``POST /ui/logout``) or when the
server restarts. After :data:`FREE_FAILURES` failed logins from one client, each further
try waits twice as long as the one before (up to :data:`MOST_WAIT` seconds): the form
answers 429 with ``Retry-After`` until then. See docs/ARCHITECTURE.md ("The dashboard").
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from oomguard.api.tenancy import Grant
from oomguard.errors import ConfigError

#: seconds a session lasts from its login
SESSION_TTL = 8 * 3600.0
#: sessions kept at once (the oldest ends first)
MOST_SESSIONS = 10_000
#: failed logins from one client before it must wait
FREE_FAILURES = 3
#: the longest wait between two tries (seconds)
MOST_WAIT = 300.0
#: clients whose failures are remembered at once (the oldest is forgotten first)
MOST_CLIENTS = 10_000


@dataclass(frozen=True)
class Session:
    grant: Grant
    expires: float


class Sessions:
    """Live sessions by id; thread-safe (pages are served from a thread pool)."""

    def __init__(
        self,
        ttl: float = SESSION_TTL,
        *,
        clock: Callable[[], float] = time.monotonic,
        most: int = MOST_SESSIONS,
    ) -> None:
        if ttl <= 0:
            raise ConfigError(f"a session must last longer than 0 s (--session-ttl), not {ttl}")
        self.ttl = ttl
        self._clock = clock
        self._most = most
        self._live: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, grant: Grant) -> str:
        """A new session of ``grant``: its id (the cookie's value)."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._live[sid] = Session(grant, self._clock() + self.ttl)
            while len(self._live) > self._most:
                self._live.popitem(last=False)
        return sid

    def grant(self, sid: str) -> Grant | None:
        """The grant of a live session (None: unknown, ended or expired)."""
        with self._lock:
            session = self._live.get(sid)
            if session is None:
                return None
            if session.expires <= self._clock():
                del self._live[sid]
                return None
            return session.grant

    def end(self, sid: str) -> bool:
        """End a session (logout); whether it was live."""
        with self._lock:
            return self._live.pop(sid, None) is not None


class LoginThrottle:
    """Failed logins by client, and how long each must wait before it tries again."""

    def __init__(
        self,
        *,
        free: int = FREE_FAILURES,
        most_wait: float = MOST_WAIT,
        clock: Callable[[], float] = time.monotonic,
        most: int = MOST_CLIENTS,
    ) -> None:
        self.free = free
        self.most_wait = most_wait
        self._clock = clock
        self._most = most
        # client -> (failures, the time before which it may not try again)
        self._failed: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Seconds ``client`` must wait before its next try (0: it may try now)."""
        with self._lock:
            entry = self._failed.get(client)
            if entry is None:
                return 0.0
            return max(0.0, entry[1] - self._clock())

    def failed(self, client: str) -> float:
        """Count a failed login of ``client``; the seconds it must now wait."""
        with self._lock:
            failures = self._failed.pop(client, (0, 0.0))[0] + 1
            over = failures - self.free
            wait = 0.0 if over <= 0 else min(self.most_wait, 2.0 ** (over - 1))
            self._failed[client] = (failures, self._clock() + wait)
            while len(self._failed) > self._most:
                self._failed.popitem(last=False)
            return wait

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failed.pop(client, None)


__all__ = ["LoginThrottle", "Session", "Sessions"]
