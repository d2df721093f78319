"""Small task functions shipped with oomguard, used by the demo, benchmarks and the server.

These are the server's default allowed tasks (``--tasks-module oomguard.examples``).
"""

from __future__ import annotations

import time

MIB = 1024 * 1024
_PAGE = 4096


def noop(x: object = None) -> object:
    """Return the argument."""
    return x


def sleep(seconds: float = 0.1) -> float:
    """Sleep, then return the seconds slept."""
    time.sleep(seconds)
    return seconds


def allocate(mib: float = 1.0, hold: float = 0.0, **_: object) -> dict[str, float]:
    """Allocate ``mib`` MiB, touching every page so it is really resident; hold it
    ``hold`` seconds; return what was allocated.

    Extra keyword arguments (``replicate`` and other sweep parameters) are accepted
    and ignored, so it can be used in any sweep.
    """
    n = int(mib * MIB)
    buf = bytearray(n)
    # Touch one byte per page: bytearray() of zeros may be lazily mapped.
    for i in range(0, n, _PAGE):
        buf[i] = 1
    if hold:
        time.sleep(hold)
    return {"allocated_mib": mib, "touched_pages": (n + _PAGE - 1) // _PAGE}


def simulate(
    n_agents: int = 100,
    steps: int = 10,
    replicate: int = 0,
    mib_per_agent: float = 0.0,
    **_: object,
) -> dict[str, float]:
    """A toy agent simulation: memory grows with ``n_agents`` (``mib_per_agent`` each)."""
    import random

    rng = random.Random(n_agents * 1000 + replicate)
    extra = allocate(n_agents * mib_per_agent) if mib_per_agent else None
    wealth = [1.0] * n_agents
    for _step in range(steps):
        for i in range(n_agents):
            j = rng.randrange(n_agents)
            if wealth[i] > 0:
                wealth[i] -= 0.1
                wealth[j] += 0.1
    del extra
    top = sorted(wealth, reverse=True)[: max(1, n_agents // 10)]
    return {"top_share": sum(top) / sum(wealth), "max_wealth": max(wealth)}


def mean_of(params: dict[str, object], results: list[object]) -> dict[str, float]:
    """Aggregation: the mean of each numeric result field over the replicates."""
    out: dict[str, float] = {"replicates": len(results)}
    if results and isinstance(results[0], dict):
        for key in results[0]:
            values = [
                value
                for r in results
                if isinstance(r, dict) and isinstance(value := r.get(key), int | float)
            ]
            if values:
                out[f"mean_{key}"] = sum(values) / len(values)
    else:
        numbers = [r for r in results if isinstance(r, int | float)]
        if numbers and len(numbers) == len(results):
            out["mean"] = sum(numbers) / len(numbers)
    return out


def fail(message: str = "task failed on purpose") -> None:
    """Raise an error (for tests and demos of classification)."""
    raise RuntimeError(message)
