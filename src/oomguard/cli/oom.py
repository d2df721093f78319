"""``oomguard oom``: what the kernel's OOM killer did, and whom it would kill next.

``oom events`` lists the kills found in the kernel log, ``oom tree`` shows the process
tree with each process's OOM score. Errors are oomguard errors, turned into a one-line
message and an exit code by :mod:`oomguard.cli.main`.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
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


#: printed above the kills (text output): what each column is
EVENTS_HEADER = (
    "# [seconds since boot] clock time (this machine's log only)  type  victim  its RSS  "
    "memory cgroup  invoker\n"
    "# reaped: the kernel's oom_reaper logged that it freed the victim's memory; not reaped: "
    "no such line (common: the victim exited and freed it by itself)"
)


def format_event(event: OomEvent, boot_time: float | None = None) -> str:
    """One human-readable line for a kill; with ``boot_time`` (seconds since the epoch at
    boot, for this machine's own log) its clock time too."""
    when = f"[{event.timestamp:12.6f}]" if event.timestamp is not None else "[   unknown  ]"
    if boot_time is not None and event.timestamp is not None:
        clock = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(boot_time + event.timestamp))
        when = f"{when} {clock}"
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


class _Printer:
    """Prints kills: JSON lines, or text lines under :data:`EVENTS_HEADER`."""

    def __init__(self, as_json: bool, cutoff: float | None, boot_time: float | None) -> None:
        self.as_json, self.cutoff, self.boot_time = as_json, cutoff, boot_time
        self.printed = 0

    def emit(self, event: OomEvent) -> None:
        if (
            self.cutoff is not None
            and event.timestamp is not None
            and event.timestamp < self.cutoff
        ):
            return
        if self.as_json:
            click.echo(json.dumps(event.to_json()))
        else:
            if not self.printed:
                click.echo(EVENTS_HEADER)
            click.echo(format_event(event, self.boot_time))
        self.printed += 1

    def end(self) -> None:
        if not self.as_json and not self.printed:
            click.echo("no OOM kills found", err=True)


#: sources that are this machine's own kernel log (their stamps are this boot's uptime)
LOCAL_SOURCES = ("auto", "kmsg", "dmesg", "journal")


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
    boot_time = None
    if source in LOCAL_SOURCES:
        with contextlib.suppress(KernelLogUnavailable):
            boot_time = time.time() - read_uptime()
    printer = _Printer(as_json, cutoff, boot_time)
    parser = OomLogParser()
    for line in iter_source_lines(source, cutoff, follow):
        if line == "":
            # An idle tick while following: the log is quiet, so the kill being
            # assembled is as complete as it will get.
            for event in parser.flush():
                printer.emit(event)
            continue
        for event in parser.feed(line):
            printer.emit(event)
    for event in parser.flush():
        printer.emit(event)
    printer.end()


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
    click.echo(
        "# [pid] command: oom_score (oom_score_adj)  rss  memory cgroup\n"
        "# the kernel kills the process with the highest oom_score first (its memory use, "
        "scaled, plus oom_score_adj); <- marks that first choice"
    )
    for depth, proc in walk_tree(procs):
        indent = "  " * depth
        score = "?" if proc.oom_score is None else str(proc.oom_score)
        adj = "?" if proc.oom_score_adj is None else f"{proc.oom_score_adj:+d}"
        mark = "  <- the OOM killer's first choice" if proc.likely_victim else ""
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
