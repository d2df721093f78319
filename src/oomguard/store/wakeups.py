"""Wake-ups: how a scheduler hears that another process made tasks ready in its store
(:meth:`~oomguard.store.protocol.Store.listen`). PostgreSQL sends a ``NOTIFY`` with each
such commit and a listener thread hears it (``store/postgres/listener.py``); SQLite has
nothing to listen to (:class:`NoWakeups`). Either way the scheduler's loop also looks by
itself every ``idle_wait`` seconds: the poll is the fallback, a wake-up only comes sooner."""

from __future__ import annotations

from typing import Protocol


class Wakeups(Protocol):
    """What :meth:`~oomguard.store.protocol.Store.listen` returns: stop listening."""

    def close(self) -> None: ...


class NoWakeups:
    """A store with nothing to listen to (SQLite): the poll finds other processes' tasks."""

    def close(self) -> None:
        return None


__all__ = ["NoWakeups", "Wakeups"]
