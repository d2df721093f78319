"""``oomguard doctor``: what oomguard will do on this machine and why."""

from __future__ import annotations

import json

import click

from oomguard.cli.exit_codes import ExitCode
from oomguard.cli.options import json_option
from oomguard.diagnosis.doctor import DoctorReport, run_doctor
from oomguard.units import format_size, parse_size

_MARK = {"ok": "ok", "warn": "WARN", "error": "ERROR"}


def _render(report: DoctorReport) -> str:
    plan = report.isolation
    lines = [
        f"isolation: {plan.mode}",
        f"  {plan.reason}",
        f"  own cgroup: {plan.own_cgroup or '-'}   limit: "
        f"{format_size(plan.own_limit_bytes) if plan.own_limit_bytes else 'none'}",
    ]
    lines += [f"  warning: {w}" for w in plan.warnings]
    lines.append("")
    width = max(len(f.name) for f in report.findings)
    lines.append(f"{'check':<{width}}  status  found / what to change")
    for f in report.findings:
        lines.append(f"{f.name:<{width}}  {_MARK[f.status]:<6}  {f.found}")
        if f.action:
            lines.append(f"{'':<{width}}  {'':<6}  -> {f.action}")
    lines.append("")
    lines.append("no errors" if report.ok else "errors found: fix them before running oomguard")
    return "\n".join(lines)


@click.command("doctor")
@json_option("Print one JSON object.")
@click.option(
    "--memory-budget",
    envvar="OOMGUARD_MEMORY_BUDGET",
    show_envvar=True,
    default=None,
    help="Memory budget to check against the machine and cgroup limit (e.g. 8GiB).",
)
@click.option(
    "--worker-memory",
    envvar="OOMGUARD_WORKER_MEMORY",
    show_envvar=True,
    default=None,
    help="Per-worker memory limit to check (e.g. 2GiB).",
)
def doctor_cmd(as_json: bool, memory_budget: str | None, worker_memory: str | None) -> None:
    """Say what oomguard will do on this machine and why (exit 11 on errors)."""
    budget = parse_size(memory_budget) if memory_budget is not None else None
    worker = parse_size(worker_memory) if worker_memory is not None else None
    report = run_doctor(memory_budget=budget, worker_memory=worker)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(_render(report))
    if not report.ok:
        click.get_current_context().exit(int(ExitCode.DOCTOR_FAILED))


def register(cli: click.Group) -> None:
    """Add ``doctor`` to the ``oomguard`` command."""
    cli.add_command(doctor_cmd)
