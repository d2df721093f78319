"""What the pool sends a worker: a :class:`Batch` of attempts, or ``None`` (exit).

A worker answers each attempt with an ``("outcome", ...)`` tuple, then ``("idle", rss,
recycle_reason)`` after the batch; a batch whose limit it could not lower (the kernel
refused: it holds more than the new limit even after giving memory back) is answered with
``("refused", message)`` and ``("idle", rss, "limit_change")``: nothing of it ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Batch:
    """Attempts a worker runs in order, under one memory limit."""

    items: list[dict[str, Any]]
    #: the limit the attempts run under (bytes; None: unlimited), for the worker's hygiene
    limit: int | None
    #: the worker lowers its own cgroup's limit to ``limit`` first (after giving memory
    #: back: the kernel will not lower a limit below what the cgroup holds)
    lower: bool = False
    #: the first attempt must measure a clean peak (worker/hygiene.py)
    clean: bool = False
