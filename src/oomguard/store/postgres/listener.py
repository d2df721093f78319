"""The listener: one thread and one connection of its own that ``LISTEN`` on the channel a
committed submission notifies (``pg_notify_tasks``), and call ``wake`` for each
notification, so that a replica starts tasks another process submitted at once, not at its
next poll.

If the connection breaks (the server restarted, the network cut), the thread connects
again with a growing pause (0.1 s doubling to 5 s) and calls ``wake`` once it listens
again: a notification sent while it was away is lost, and the tasks it told of may be
waiting. Until then the scheduler's own poll (``idle_wait``) finds them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oomguard.store.location import shown
from oomguard.store.postgres.dialect import OWN

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("oomguard.store")

#: the pause before connecting again after a failure: doubled each time, up to the most
FIRST_PAUSE, MOST_PAUSE = 0.1, 5.0
#: how long one wait for notifications lasts (how soon :meth:`Listener.close` is seen)
WAIT = 0.5


class Listener:
    """Calls ``wake()`` (on its own thread) for each notification on ``url``'s database,
    until :meth:`close`."""

    def __init__(
        self,
        url: str,
        wake: Callable[[], None],
        *,
        connect_timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._wake = wake
        self._connect_timeout = connect_timeout
        self._stop = threading.Event()
        #: how many times it started listening (the first connection included)
        self.listening = 0
        self._thread = threading.Thread(target=self._run, name="oomguard-pg-listener", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening and close its connection (within about :data:`WAIT` seconds)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        pause = FIRST_PAUSE
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except psycopg.Error as err:
                log.warning("listener for %s cannot connect: %s", shown(self._url), err)
            else:
                pause = FIRST_PAUSE
                try:
                    self._listen(conn)
                except psycopg.Error as err:
                    log.warning("listener for %s lost its connection: %s", shown(self._url), err)
                finally:
                    conn.close()
            self._stop.wait(pause)
            pause = min(MOST_PAUSE, pause * 2)

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=max(1, int(self._connect_timeout)),
            application_name="oomguard listener",
            # A peer gone silent (a cut network) is noticed in about a minute, not hours.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(OWN["pg_listen_tasks"])
        self.listening += 1
        if self.listening > 1:
            self._wake()  # listening again: what was sent meanwhile was missed
        while not self._stop.is_set():
            for _ in conn.notifies(timeout=WAIT):
                self._wake()


__all__ = ["Listener"]
