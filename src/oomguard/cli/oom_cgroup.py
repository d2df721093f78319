"""``oomguard oom cgroup [PID|PATH]``: a memory cgroup and its ancestors, and which
limit will be hit first. Added to the ``oom`` group by :mod:`oomguard.cli.oom`."""

from __future__ import annotations

import json

import click

from oomguard.cgroups.info import CgroupInfo, CgroupLevel, inspect_cgroup
from oomguard.cli.exit_codes import ExitCode
from oomguard.cli.options import json_option
from oomguard.units import format_size


def _size(n: int | None, none: str = "-") -> str:
    return none if n is None else format_size(n)


def _events(level: CgroupLevel, version: int) -> str:
    keys = ("oom", "oom_kill", "max", "high", "oom_group_kill") if version == 2 else ("oom_kill",)
    shown = [f"{k}={level.events[k]}" for k in keys if k in level.events]
    return " ".join(shown) or "-"


def _pressure(level: CgroupLevel, version: int) -> str:
    if version == 1:
        return "n/a (v1)"
    if not level.pressure:
        return "-"
    some = level.pressure.get("some", {}).get("avg10")
    full = level.pressure.get("full", {}).get("avg10")
    return f"some {some} full {full}"


def _render(info: CgroupInfo) -> str:
    lines = [f"cgroup v{info.version}" + (f", process {info.pid}" if info.pid else "")]
    for level in info.levels:
        oom_group = "-" if level.oom_group is None else str(int(level.oom_group))
        lines += [
            f"{level.path}",
            f"  limit {_size(level.limit_bytes, 'none')}  usage {_size(level.usage_bytes)}"
            f"  peak {_size(level.peak_bytes)}  headroom {_size(level.headroom_bytes)}",
            f"  swap limit {_size(level.swap_limit_bytes)}  high {_size(level.high_bytes)}"
            f"  oom.group {oom_group}",
            f"  events {_events(level, info.version)}  pressure avg10 "
            f"{_pressure(level, info.version)}",
        ]
    first = info.hits_first
    if first is None:
        lines.append(
            f"hits first: no cgroup limit; the machine's memory "
            f"({_size(info.machine_memory_bytes)})"
        )
    else:
        lines.append(
            f"hits first: {first.path} (limit {_size(first.limit_bytes)}, "
            f"{_size(first.headroom_bytes)} left)"
        )
    lines += [f"note: {note}" for note in info.notes]
    return "\n".join(lines)


@click.command("cgroup")
@click.argument("target", required=False, metavar="[PID|PATH]")
@json_option("Print one JSON object.")
def cgroup_cmd(target: str | None, as_json: bool) -> None:
    """Show a memory cgroup (default: this process's) and each ancestor: limit, usage,
    peak, OOM counters, memory.oom.group, swap limit, pressure, and which limit will be
    hit first."""
    try:
        info = inspect_cgroup(target)
    except LookupError as err:
        click.echo(f"oomguard: error: {err.args[0] if err.args else err}", err=True)
        click.get_current_context().exit(int(ExitCode.NOT_FOUND))
    click.echo(json.dumps(info.to_json(), indent=2) if as_json else _render(info))
