"""One notification a minute per workload: a crash-looping pod is one notice a minute,
and that notice says how many kills were held back since the last one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Decision", "RateLimiter"]


@dataclass(frozen=True)
class Decision:
    """Whether to notify now, and how many kills of the workload were held back before."""

    send: bool
    suppressed: int


class RateLimiter:
    """At most one notification per ``interval`` seconds per workload key."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def decide(self, key: str) -> Decision:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return Decision(False, self._held[key])
        self._last[key] = now
        # Keys quiet for longer than the interval are forgotten: the map stays small.
        for old in [k for k, t in self._last.items() if now - t >= self.interval and k != key]:
            if not self._held.get(old):
                del self._last[old]
        return Decision(True, self._held.pop(key, 0))
