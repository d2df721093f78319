"""The memory budget: how much the scheduler may hand out, and limits that cannot be."""

from __future__ import annotations

from oomguard.config import RunnerConfig
from oomguard.errors import ConfigError
from oomguard.procfs import machine_memory_bytes
from oomguard.units import format_size


def machine_memory() -> int:
    """This machine's memory in bytes, as ``oomguard doctor`` and ``oom cgroup`` report it."""
    total = machine_memory_bytes()
    if total is None:
        raise ConfigError("cannot read MemTotal from /proc/meminfo: oomguard needs Linux's /proc")
    return total


def derive_budget(config: RunnerConfig, own_limit: int | None) -> int:
    if config.memory_budget is not None:
        return config.memory_budget
    total = machine_memory()
    if own_limit is not None:
        total = min(total, own_limit)
    return max(total - config.memory_reserve, 64 * 1024 * 1024)


def check_limits(config: RunnerConfig, own_limit: int | None) -> None:
    """A worker memory or budget above the machine or the container is an error."""
    machine = machine_memory()
    where, limit = "this machine's memory", machine
    if own_limit is not None and own_limit < machine:
        where, limit = "the memory limit of oomguard's own cgroup (container)", own_limit
    for option, value in (
        ("--worker-memory", config.worker_memory),
        ("--memory-budget", config.memory_budget),
    ):
        if value is not None and value > limit:
            raise ConfigError(
                f"{option} {format_size(value)} is larger than {where} ({format_size(limit)})",
                option=option,
                value=value,
                limit_bytes=limit,
            )
