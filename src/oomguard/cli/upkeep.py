"""``oomguard forget | gc``: keep a long-lived store small.

``forget`` deletes a finished job's rows; ``gc`` deletes the blob files beside the store
that no row refers to any more. Both are safe while a scheduler runs on the store.
"""

from __future__ import annotations

import json

import click

from oomguard.cli.jobs import open_store
from oomguard.cli.options import existing_store_option, json_option
from oomguard.units import format_size, parse_duration

#: ``gc --min-age`` below this needs ``--force``: a blob is written before the row that
#: refers to it commits, so a young unreferenced blob may be about to be used
MIN_AGE_FLOOR = 600.0


@click.command()
@click.argument("job")
@existing_store_option
@click.option(
    "--force",
    is_flag=True,
    envvar="OOMGUARD_FORGET_FORCE",
    show_envvar=True,
    help="Forget even results not yet written to the job's Parquet output.",
)
@json_option()
def forget(job: str, store: str, force: bool, as_json: bool) -> None:
    """Delete a finished job from the store (its Parquet output stays).

    Refused while the job has unfinished tasks or running attempts: cancel it first.
    Running `oomguard gc` afterwards frees the blob files only that job used.
    """
    with open_store(store) as st:
        job_id = st.resolve_job(job)
        counts = st.admin.forget_job(job_id, force=force)
    if as_json:
        click.echo(json.dumps({"job_id": job_id, **counts}))
        return
    click.echo(
        f"job {job_id} forgotten: {counts['tasks']} task(s), {counts['attempts']} attempt(s), "
        f"{counts['results']} result(s), {counts['events']} event(s) deleted"
    )


@click.command()
@existing_store_option
@click.option(
    "--min-age",
    default="1h",
    envvar="OOMGUARD_GC_MIN_AGE",
    show_envvar=True,
    help="Keep unreferenced blob files younger than this (a scheduler may be about to use "
    "them), e.g. 10m, 1h, 2d; at least 10m unless --force.",
)
@click.option(
    "--force",
    is_flag=True,
    envvar="OOMGUARD_GC_FORCE",
    show_envvar=True,
    help="Allow --min-age below 10m: safe only while no scheduler, server or submitter "
    "uses the store.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    envvar="OOMGUARD_GC_DRY_RUN",
    show_envvar=True,
    help="Only report what would be deleted.",
)
@click.option(
    "--vacuum",
    is_flag=True,
    envvar="OOMGUARD_GC_VACUUM",
    show_envvar=True,
    help="Then compact the SQLite file (VACUUM): gives the space of forgotten jobs back "
    "to the disk. Needs free disk of about the store's size, and holds writers (a "
    "running scheduler or server waits) while it runs.",
)
@json_option()
def gc(store: str, min_age: str, force: bool, dry_run: bool, vacuum: bool, as_json: bool) -> None:
    """Delete blob files beside the store that no task or result refers to any more;
    with --vacuum, compact the store file too."""
    seconds = parse_duration(min_age)
    if seconds < MIN_AGE_FLOOR and not force:
        raise click.BadParameter(
            f"{min_age!r} is below the 10m floor: a blob that young may belong to a "
            "submission or result being written right now. Add --force to go lower, only "
            "while nothing else uses the store.",
            param_hint="'--min-age'",
        )
    sizes = None
    with open_store(store) as st:
        report = st.blobs.collect_garbage(min_age=seconds, dry_run=dry_run)
        if vacuum and not dry_run:
            sizes = st.retention.vacuum()
    if as_json:
        extra = {} if sizes is None else {"store_bytes_before": sizes[0], "store_bytes": sizes[1]}
        click.echo(json.dumps({**report.as_dict(), **extra}))
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{report.blobs} blob file(s): {report.referenced} in use, {report.young} younger than "
        f"{min_age}, {verb} {report.removed} ({format_size(report.removed_bytes)}); "
        f"{report.temporary_removed} leftover temporary file(s) {verb}"
    )
    if sizes is not None:
        click.echo(f"store compacted: {format_size(sizes[0])} -> {format_size(sizes[1])}")


def register(cli: click.Group) -> None:
    for command in (forget, gc):
        cli.add_command(command)


__all__ = ["register"]
