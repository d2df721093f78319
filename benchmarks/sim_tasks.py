"""The tasks of ``benchmarks/sim_sweep.py``: an agent-based epidemic model in numpy.

Each day every agent meets ``contacts`` others drawn at random; the day's arrays (the
contact matrix, who was exposed, the infection probabilities) are built and dropped again,
so a task's memory comes and goes: about 100 bytes an agent at its peak over a few MiB
kept for the whole run. Time and memory grow with ``n_agents``. The same seed gives the
same numbers anywhere (``numpy.random.default_rng``), so two runners can be compared
result by result.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def epidemic(
    n_agents: int,
    days: int = 12,
    contacts: int = 12,
    beta: float = 0.08,
    gamma: float = 0.2,
    seed: int = 0,
    replicate: int = 0,
) -> dict[str, Any]:
    """Run an SIR epidemic for ``days`` days; its attack rate and peak."""
    rng = np.random.default_rng([seed, replicate, n_agents])
    state = np.zeros(n_agents, np.int8)  # 0 susceptible, 1 infected, 2 recovered
    state[rng.choice(n_agents, max(10, n_agents // 10_000), replace=False)] = 1
    age = rng.integers(0, 90, n_agents, dtype=np.int16)
    susceptibility = 0.5 + age / 180.0
    curve = []
    for _ in range(days):
        met = rng.integers(0, n_agents, size=(n_agents, contacts), dtype=np.int32)
        exposed = (state[met] == 1).sum(axis=1)
        risk = (1.0 - np.power(1.0 - beta, exposed)) * susceptibility
        infected = (state == 0) & (rng.random(n_agents) < risk)
        recovered = (state == 1) & (rng.random(n_agents) < gamma)
        state[infected] = 1
        state[recovered] = 2
        curve.append(int((state == 1).sum()))
    return {
        "attack_rate": float((state > 0).mean()),
        "peak_infected": max(curve),
        "peak_day": int(np.argmax(curve)),
    }


def summarize(params: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """A parameter set's replicates in one row: their mean attack rate and peak."""
    n = len(results)
    return {
        "n_agents": params["n_agents"],
        "replicates": n,
        "attack_rate": sum(r["attack_rate"] for r in results) / n,
        "peak_infected": sum(r["peak_infected"] for r in results) / n,
    }


def epidemic_of_set(set_id: int, **params: Any) -> dict[str, Any]:
    """:func:`epidemic` for a parameter set that carries its index in the plan."""
    return epidemic(**params)
