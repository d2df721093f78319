"""``oomguard oom``: what the kernel's OOM killer did, and whom it would kill next.

``oom events`` lists the kills found in the kernel log, ``oom tree`` shows the process
tree with each process's OOM score. Errors are oomguard errors, turned into a one-line
message and an exit code by :mod:`oomguard.cli.main`.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from oomguard.cli.options import json_option
from oomguard.diagnosis.proctree import build_tree, walk_tree
from oomguard.errors import KernelLogUnavailable
from oomguard.kernlog import OomEvent, OomLogParser, iter_source_lines
from oomguard.units import parse_duration


def read_uptime(proc_root: str | Path = "/proc") -> float:
    """Seconds since boot, from ``/proc/uptime``."""
    path = Path(proc_root) / "uptime"
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError) as err:
        raise KernelLogUnavailable(f"cannot read {path}: {err}", path=str(path)) from None


def _kb(value: int | None) -> str:
    if value is None:
        return "?"
    if value >= 1024 * 1024:
        return f"{value / (1024 * 1024):.1f}GiB"
    if value >= 1024:
        return f"{value / 1024:.1f}MiB"
    return f"{value}kB"


def format_event(event: OomEvent) -> str:
    """One human-readable line for a kill."""
    when = f"[{event.timestamp:12.6f}]" if event.timestamp is not None else "[   unknown  ]"
    victim = (
        f"{event.victim_pid} ({event.victim_comm or '?'})"
        if event.victim_pid is not None
        else "unknown victim"
    )
    parts = [when, f"{event.oom_type or 'oom':6}", f"killed {victim}", f"rss {_kb(event.rss_kb)}"]
    memcg = event.oom_memcg or event.task_memcg
    if memcg:
        parts.append(f"memcg {memcg}")
    if event.task_memcg and event.oom_memcg and event.task_memcg != event.oom_memcg:
        parts.append(f"(task in {event.task_memcg})")
    if event.invoker_comm:
        parts.append(f"invoked by {event.invoker_comm}")
    if event.oom_group:
        parts.append("oom.group")
    parts.append("reaped" if event.reaped else "not reaped")
    return "  ".join(parts)


def _emit(event: OomEvent, as_json: bool, cutoff: float | None) -> None:
    if cutoff is not None and event.timestamp is not None and event.timestamp < cutoff:
        return
    if as_json:
        click.echo(json.dumps(event.to_json()))
    else:
        click.echo(format_event(event))


@click.group("oom")
def oom_group() -> None:
    """Inspect OOM kills and the OOM killer's view of the processes."""


@oom_group.command("events")
@click.option(
    "--source",
    default="auto",
    envvar="OOMGUARD_OOM_SOURCE",
    show_envvar=True,
    help="auto, kmsg, dmesg, journal, a log FILE, or - for stdin.",
)
@click.option(
    "--since",
    default=None,
    envvar="OOMGUARD_OOM_SINCE",
    show_envvar=True,
    help="Only kills in this last span of time, e.g. 90s, 10m, 2h, 1d.",
)
@click.option(
    "--follow",
    is_flag=True,
    envvar="OOMGUARD_OOM_FOLLOW",
    show_envvar=True,
    help="Keep reading and print kills as they happen.",
)
@json_option("Print JSON Lines, one object per kill.", name="OOM_JSON")
def events_cmd(source: str, since: str | None, follow: bool, as_json: bool) -> None:
    """List the kills of the kernel's OOM killer, one per line."""
    cutoff: float | None = None
    if since is not None:
        cutoff = read_uptime() - parse_duration(since)
    parser = OomLogParser()
    for line in iter_source_lines(source, cutoff, follow):
        if line == "":
            # An idle tick while following: the log is quiet, so the kill being
            # assembled is as complete as it will get.
            for event in parser.flush():
                _emit(event, as_json, cutoff)
            continue
        for event in parser.feed(line):
            _emit(event, as_json, cutoff)
    for event in parser.flush():
        _emit(event, as_json, cutoff)


def _bytes(value: int | None) -> str:
    return "?" if value is None else _kb(value // 1024)


@oom_group.command("tree")
@click.option(
    "--extended",
    is_flag=True,
    envvar="OOMGUARD_OOM_EXTENDED",
    show_envvar=True,
    help="Also show each process's command line.",
)
@json_option("Print a JSON array of processes.", name="OOM_JSON")
@click.option(
    "--proc-root",
    default="/proc",
    envvar="OOMGUARD_PROC_ROOT",
    show_envvar=True,
    hidden=True,
)
def tree_cmd(extended: bool, as_json: bool, proc_root: str) -> None:
    """Show the process tree with OOM scores; mark whom the OOM killer would pick first."""
    procs = build_tree(proc_root)
    if as_json:
        click.echo(json.dumps([p.to_json() for _, p in walk_tree(procs)], indent=1))
        return
    for depth, proc in walk_tree(procs):
        indent = "  " * depth
        score = "?" if proc.oom_score is None else str(proc.oom_score)
        adj = "?" if proc.oom_score_adj is None else f"{proc.oom_score_adj:+d}"
        mark = "  <- likely OOM victim" if proc.likely_victim else ""
        click.echo(
            f"{indent}[{proc.pid}] {proc.comm}: {score} ({adj})  rss {_bytes(proc.rss_bytes)}"
            f"  {proc.memcg or '?'}{mark}"
        )
        if extended and proc.cmdline:
            click.echo(f"{indent}    {shlex.join(proc.cmdline)}")


def register(cli: click.Group) -> None:
    """Add the ``oom`` group (and ``oom cgroup`` where that module exists) to ``cli``."""
    try:
        from oomguard.cli.oom_cgroup import cgroup_cmd  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as err:
        if err.name != "oomguard.cli.oom_cgroup":
            raise
    else:
        if "cgroup" not in oom_group.commands:
            oom_group.add_command(cgroup_cmd, "cgroup")
    cli.add_command(oom_group)
