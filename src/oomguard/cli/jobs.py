"""``oomguard status | results | retry | cancel``: jobs in a store file (or, for
``status``, on a server)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from oomguard.cli.options import existing_store_option, json_option, token_option
from oomguard.cli.render import FAILURES_READ, print_json, print_status

if TYPE_CHECKING:
    from oomguard.store.protocol import Store


def open_store(store: str) -> Store:
    from oomguard.errors import StoreError
    from oomguard.store import factory
    from oomguard.store.location import is_url

    if not is_url(store) and not Path(store).exists():
        raise StoreError(f"no store at {store!r}", path=store)
    return factory.open_store(store, create=False)


@click.command()
@click.argument("job", required=False)
@existing_store_option
@click.option(
    "--server",
    default=None,
    envvar="OOMGUARD_SERVER",
    show_envvar=True,
    help="Ask an `oomguard serve` at this URL instead of a store file.",
)
@token_option("file holding the bearer token of --server")
@click.option(
    "--failures",
    "show_failures",
    type=click.IntRange(min=0),
    default=5,
    envvar="OOMGUARD_STATUS_FAILURES",
    show_envvar=True,
    help="Show up to N groups of failed tasks (by class and memory key) with their evidence.",
    show_default=True,
)
@json_option("Print JSON.")
def status(
    job: str | None,
    store: str,
    server: str | None,
    token_file: str | None,
    show_failures: int,
    as_json: bool,
) -> None:
    """Show a job's counts by state, failures by class and evidence (newest job by default)."""
    if server:
        from oomguard.cli.client import remote_status

        sys.exit(remote_status(server, job, token_file, as_json, show_failures))
    from oomguard.runner import job_failures, job_status

    with open_store(store) as st:
        job_id = st.resolve_job(job)
        info = job_status(st, job_id)
        failures = job_failures(st, job_id, limit=FAILURES_READ if show_failures else 0)
        estimates = st.estimate_rows()
    if as_json:
        print_json(
            info.to_json()
            | {
                "failures": [f.to_json() for f in failures[:show_failures]],
                "estimates": {
                    k: {
                        "bytes": r.bytes,
                        "peak_bytes": r.peak_bytes,
                        "samples": r.samples,
                        "killed_at": r.killed_at,
                        "unfit_cap": r.unfit_cap,
                    }
                    | ({"needs_more_memory": r.proof} if r.unfit_cap else {})
                    for k, r in estimates.items()
                },
            }
        )
        return
    print_status(info, failures, groups=show_failures)


@click.command()
@click.argument("job", required=False)
@existing_store_option
@click.option(
    "--aggregates",
    is_flag=True,
    envvar="OOMGUARD_AGGREGATES",
    show_envvar=True,
    help="The aggregations' results.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "parquet"]),
    default="jsonl",
    envvar="OOMGUARD_RESULTS_FORMAT",
    show_envvar=True,
    help="Output format.",
)
@click.option(
    "--output",
    "-o",
    default="-",
    envvar="OOMGUARD_RESULTS_OUTPUT",
    show_envvar=True,
    help="File to write (- for stdout).",
)
def results(job: str | None, store: str, aggregates: bool, fmt: str, output: str) -> None:
    """Print or save a job's stored results."""
    from oomguard.results.parquet import table_for

    with open_store(store) as st:
        job_id = st.resolve_job(job)
        table = table_for(st, job_id, "aggregate" if aggregates else "task")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if output == "-":
            raise click.UsageError("--format parquet needs --output FILE")
        pq.write_table(table, output)
        return
    if fmt == "csv":
        import pyarrow.csv as pcsv

        sink = sys.stdout.buffer if output == "-" else output
        pcsv.write_csv(table, sink)
        return
    fh = sys.stdout if output == "-" else open(output, "w")  # noqa: SIM115
    try:
        for row in table.to_pylist():
            fh.write(json.dumps(row, default=repr) + "\n")
    finally:
        if fh is not sys.stdout:
            fh.close()


@click.command()
@click.argument("job")
@existing_store_option
@click.option(
    "--failed",
    is_flag=True,
    required=True,
    envvar="OOMGUARD_RETRY_FAILED",
    show_envvar=True,
    help="Retry the job's failed tasks.",
)
def retry(job: str, store: str, failed: bool) -> None:
    """Make a job's failed tasks ready again; `oomguard run` (or a server) runs them."""
    with open_store(store) as st:
        job_id = st.resolve_job(job)
        n = st.admin.retry_failed(job_id)
    click.echo(f"job {job_id}: {n} task(s) ready to run again")


@click.command()
@click.argument("job")
@existing_store_option
def cancel(job: str, store: str) -> None:
    """Cancel a job's unfinished tasks (running attempts are stopped by their scheduler)."""
    with open_store(store) as st:
        job_id = st.resolve_job(job)
        n = st.admin.cancel(job_id)
    click.echo(f"job {job_id}: {n} task(s) cancelled")


def register(cli: click.Group) -> None:
    for command in (status, results, retry, cancel):
        cli.add_command(command)


__all__ = ["open_store", "register"]
