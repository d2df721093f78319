"""The tasks of ``benchmarks/sim_sweep.py``: an agent-based epidemic model in numpy.

Each day every agent meets ``contacts`` others drawn at random; the day's arrays (the
contact matrix, who was exposed, the infection probabilities) are built and dropped again,
and every agent (a Python object, as agent-based models keep them) records its risk of the
day in its history: a task's memory grows over its run (about 2 KiB an agent over 60
days) and is all freed at its end. Time and memory grow with ``n_agents``. The same seed gives the
same numbers anywhere (``numpy.random.default_rng``), so two runners can be compared
result by result.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Agent:
    """One person, as agent-based models keep them: a Python object with a history."""

    __slots__ = ("age", "history", "uid")

    def __init__(self, uid: int, age: int) -> None:
        self.uid = uid
        self.age = age
        self.history: list[float] = []


def epidemic(
    n_agents: int,
    days: int = 60,
    contacts: int = 12,
    beta: float = 0.08,
    gamma: float = 0.2,
    seed: int = 0,
    replicate: int = 0,
) -> dict[str, Any]:
    """Run an SIR epidemic for ``days`` days; its attack rate and peak."""
    rng = np.random.default_rng([seed, replicate, n_agents])
    state = np.zeros(n_agents, np.int8)  # 0 susceptible, 1 infected, 2 recovered
    state[rng.choice(n_agents, max(10, n_agents // 1_000), replace=False)] = 1
    ages = rng.integers(0, 90, n_agents, dtype=np.int16)
    agents = [Agent(i, age) for i, age in enumerate(ages.tolist())]
    susceptibility = 0.5 + ages / 180.0
    curve = []
    for _ in range(days):
        met = rng.integers(0, n_agents, size=(n_agents, contacts), dtype=np.int32)
        exposed = (state[met] == 1).sum(axis=1)
        risk = (1.0 - np.power(1.0 - beta, exposed)) * susceptibility
        infected = (state == 0) & (rng.random(n_agents) < risk)
        recovered = (state == 1) & (rng.random(n_agents) < gamma)
        state[infected] = 1
        state[recovered] = 2
        for agent, value in zip(agents, risk.tolist(), strict=True):  # its daily risk
            agent.history.append(value)
        curve.append(int((state == 1).sum()))
    return {
        "attack_rate": float((state > 0).mean()),
        "peak_infected": max(curve),
        "peak_day": int(np.argmax(curve)),
        "mean_risk": sum(sum(a.history) for a in agents) / (n_agents * days),
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
