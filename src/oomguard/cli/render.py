"""What the commands print: a job's status (the person's report of :mod:`oomguard.cli.report`
or its JSON), the end of ``run`` (its JSON summary and next steps), a submission's answer
and a server's heap profile. Commands parse, call the library, and hand the answer here."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence

import click

from oomguard.cli.report import render
from oomguard.jobs.status import Failure, JobStatus
from oomguard.store.location import shown as shown_store
from oomguard.units import format_size

#: failed tasks read to group them (``--failures`` says how many groups are shown)
FAILURES_READ = 200

#: the keys of a status that ``run --json`` prints, in this order
RUN_SUMMARY_KEYS = ("job_id", "counts", "failures_by_class", "out", "state")


def print_status(
    status: JobStatus, failures: Sequence[Failure] | None = None, groups: int = 5
) -> None:
    """Tell a person how the job went (cli/report.py: the same for run and status)."""
    for line in render(status, failures or [], groups):
        click.echo(line)


def print_json(value: object) -> None:
    """One JSON document on stdout (values JSON cannot hold are written as ``str``)."""
    click.echo(json.dumps(value, default=str))


def run_summary(status: JobStatus) -> str:
    """The JSON object ``run --json`` prints at the end."""
    document = status.to_json()
    return json.dumps({key: document[key] for key in RUN_SUMMARY_KEYS})


def next_steps(store: str, status: JobStatus) -> str:
    """The commands that show more of a job, printed at the end of ``run``."""
    # A URL is shown without its password (give it again, or through PGPASSWORD).
    where = "" if store == "oomguard.sqlite" else f" --store {shlex.quote(shown_store(store))}"
    job = status.job_id
    lines = [
        f"next: oomguard status {job}{where} --json  (every attempt's evidence)",
        f"      oomguard ui{where}  (the dashboard, on http://127.0.0.1:8766/ui/)",
    ]
    if status.counts.get("succeeded"):
        lines.append(f"      oomguard results {job}{where}  (the results as JSON lines)")
    return "\n".join(lines)


def print_submitted(result: Mapping[str, object], as_json: bool) -> None:
    """A server's answer to a submission."""
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"job {result['job_id']}: {result['tasks']} task(s) accepted "
            f"(namespace {result['namespace']})"
        )


def print_heap(report: Mapping[str, object], as_json: bool) -> None:
    """A server's top allocation sites (``profile heap``)."""
    if as_json:
        click.echo(json.dumps(report))
        return

    def size_of(value: object) -> str:
        return format_size(int(str(value)))

    click.echo(
        f"rss {size_of(report['rss_bytes'])}, traced "
        f"{size_of(report['traced_current_bytes'])} (peak "
        f"{size_of(report['traced_peak_bytes'])})"
    )
    top = report["top"]
    assert isinstance(top, list)
    for site in top:
        click.echo(f"{size_of(site['size_bytes']):>10}  {site['count']:>8}  {site['site']}")


__all__ = [
    "FAILURES_READ",
    "next_steps",
    "print_heap",
    "print_json",
    "print_status",
    "print_submitted",
    "run_summary",
]
