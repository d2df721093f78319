"""The task of ``benchmarks/realistic_sweep.py``: an agent simulation as research code
writes it. Importing this module imports numpy, pandas and scipy (a worker's first task
pays for that, about 170 MiB resident); each run builds agents that point at their model
and at each other (reference cycles, as simulation libraries make), steps them with numpy,
and returns a few statistics.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pandas as pd
import scipy.integrate  # a real sweep imports what its models use
import scipy.sparse
import scipy.stats


class Model:
    def __init__(self, n_agents: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.agents: list[Agent] = []
        self.wealth = np.ones(n_agents)
        for i in range(n_agents):
            Agent(self, i)
        # Each agent knows a few others: more cycles, as networks of agents have.
        pick = random.Random(seed)
        for agent in self.agents:
            agent.friends = [self.agents[pick.randrange(n_agents)] for _ in range(3)]

    def step(self, work: int) -> None:
        for _ in range(work):
            give = self.rng.random(self.wealth.shape) * 0.01 * self.wealth
            self.wealth -= give
            self.wealth += np.roll(give, 1)
        for agent in self.agents[:: max(1, len(self.agents) // 100)]:
            agent.history.append(float(self.wealth[agent.index]))


class Agent:
    def __init__(self, model: Model, index: int) -> None:
        self.model = model
        self.index = index
        self.friends: list[Agent] = []
        self.history: list[float] = []
        self.state = np.zeros(16)
        model.agents.append(self)


def simulate(
    n_agents: int = 1000, steps: int = 10, work: int = 100, seed: int = 0, **_other: Any
) -> dict[str, Any]:
    """Run the model ``steps`` times, ``work`` numpy updates a step; statistics back."""
    model = Model(n_agents, seed)
    for _ in range(steps):
        model.step(work)
    frame = pd.DataFrame({"wealth": model.wealth})
    graph = scipy.sparse.random(min(n_agents, 2000), min(n_agents, 2000), density=0.001,
                                random_state=seed)
    return {
        "gini": float(scipy.stats.variation(model.wealth)),
        "mean": float(frame["wealth"].mean()),
        "edges": int(graph.nnz),
    }
