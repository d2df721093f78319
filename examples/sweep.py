"""The task functions of examples/study.toml (see docs/guide/jobs-as-files.md)."""

from __future__ import annotations

import random


def simulate(n_agents: int, density: float, replicate: int) -> dict[str, float]:
    """A toy agent model: the share of agents that end up in a cluster."""
    rng = random.Random(n_agents * 1_000_003 + int(density * 1000) * 101 + replicate)
    positions = [rng.random() for _ in range(n_agents)]
    positions.sort()
    gap = 1.0 / (density * n_agents)
    clustered = sum(1 for a, b in zip(positions, positions[1:]) if b - a < gap)
    return {"clustered": clustered / n_agents, "seed": replicate}


def summarize(params: dict[str, float], results: list[dict[str, float]]) -> dict[str, float]:
    """The mean and spread of a parameter set's replicates."""
    values = [r["clustered"] for r in results]
    mean = sum(values) / len(values)
    return {"mean_clustered": mean, "spread": max(values) - min(values)}
