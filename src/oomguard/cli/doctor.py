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
@click.option(
    "--dask-address",
    envvar="OOMGUARD_DASK_ADDRESS",
    show_envvar=True,
    default=None,
    help="Also say how each worker of this Dask cluster isolates oomguard's attempts "
    "(or would, where oomguard has not run yet).",
)
def doctor_cmd(
    as_json: bool, memory_budget: str | None, worker_memory: str | None, dask_address: str | None
) -> None:
    """Say what oomguard will do on this machine and why (exit 11 on errors)."""
    budget = parse_size(memory_budget) if memory_budget is not None else None
    worker = parse_size(worker_memory) if worker_memory is not None else None
    report = run_doctor(memory_budget=budget, worker_memory=worker)
    dask = _dask_workers(dask_address) if dask_address else None
    if as_json:
        click.echo(json.dumps(dict(report.to_json(), dask_workers=dask), indent=2))
    else:
        click.echo(_render(report))
        if dask is not None:
            click.echo(_render_dask(dask_address or "", dask))
    if not report.ok:
        click.get_current_context().exit(int(ExitCode.DOCTOR_FAILED))


def _dask_workers(address: str) -> dict[str, dict[str, object]]:
    """Each Dask worker's isolation of attempts, by address (exit 10 if unreachable)."""
    from oomguard.config import RunnerConfig
    from oomguard.errors import ConfigError

    try:  # the package says which extra to install when distributed is missing
        from oomguard.executors.dask.cluster import connect, describe_workers

        client = connect(RunnerConfig(executor="dask", dask_address=address))
    except ConfigError as err:
        click.echo(f"oomguard: {err}", err=True)
        raise SystemExit(int(ExitCode.CONNECTION)) from err
    try:
        return describe_workers(client)
    finally:
        client.close()  # type: ignore[no-untyped-call]


def _render_dask(address: str, workers: dict[str, dict[str, object]]) -> str:
    lines = [f"dask cluster {address}: {len(workers)} worker(s)"]
    for name, info in sorted(workers.items()):
        lines.append(f"  {name}: {info.get('mode')}  ({info.get('reason')})")
    if any(info.get("mode") == "thread" for info in workers.values()):
        lines.append(
            "  -> in thread mode a task that outgrows its limit takes its Dask worker down"
        )
    return "\n".join(lines)


def register(cli: click.Group) -> None:
    """Add ``doctor`` to the ``oomguard`` command."""
    cli.add_command(doctor_cmd)
