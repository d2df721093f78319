"""``oomguard run | status | results | retry | cancel``: jobs on a local store."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from oomguard.cli.exit_codes import ExitCode
from oomguard.cli.jobs import print_status
from oomguard.cli.options import (
    json_option,
    lost_retries_option,
    notify_options,
    size,
    store_option,
)
from oomguard.cli.process import Terminated, log_to_stderr, say, stop_on_sigterm
from oomguard.config import load_config
from oomguard.errors import PayloadError
from oomguard.units import format_size

if TYPE_CHECKING:
    pass


def _params_file(path: str) -> tuple[str, int]:
    """Validate the params file: every line a JSON object. Return (hash, count)."""
    digest = hashlib.sha256()
    count = 0
    try:
        fh = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as err:
        raise PayloadError(f"cannot read params file {path!r}: {err.strerror}") from err
    with fh:
        for lineno, raw in enumerate(fh, 1):
            digest.update(raw)
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except ValueError as err:
                reason = getattr(err, "msg", str(err))
                raise PayloadError(
                    f"{path}:{lineno}: not valid JSON ({reason})", line=lineno
                ) from err
            if not isinstance(value, dict):
                raise PayloadError(
                    f"{path}:{lineno}: expected a JSON object of keyword arguments, "
                    f"got {type(value).__name__}",
                    line=lineno,
                )
            count += 1
    return digest.hexdigest(), count


def _iter_params(path: str) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                yield json.loads(raw)


@click.command()
@click.argument("task")
@click.option(
    "--params",
    "params_file",
    required=True,
    envvar="OOMGUARD_PARAMS",
    show_envvar=True,
    help="JSON Lines file: one object of keyword arguments a line.",
)
@click.option(
    "--replicates",
    type=click.IntRange(min=1),
    default=None,
    envvar="OOMGUARD_REPLICATES",
    show_envvar=True,
    help="Run each parameter set R times, as fn(**params, replicate=i).",
)
@click.option(
    "--aggregate",
    "aggregate",
    default=None,
    envvar="OOMGUARD_AGGREGATE",
    show_envvar=True,
    help="AGG (module:function or file.py:function) called as "
    "agg(params, results) once a parameter set's replicates succeeded.",
)
@store_option
@click.option(
    "--out",
    default=None,
    envvar="OOMGUARD_OUT",
    show_envvar=True,
    help="Directory for Parquet results (OUT/tasks, OUT/aggregates).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    envvar="OOMGUARD_WORKERS",
    show_envvar=True,
    help="Worker processes [default: CPU count].",
)
@click.option(
    "--worker-memory",
    callback=size,
    default=None,
    envvar="OOMGUARD_WORKER_MEMORY",
    show_envvar=True,
    help="The most any one attempt may use (its worker's kernel limit), e.g. 2GiB.",
)
@click.option(
    "--isolation",
    type=click.Choice(["auto", "cgroup", "watchdog"]),
    default=None,
    envvar="OOMGUARD_ISOLATION",
    show_envvar=True,
    help="auto: a memory cgroup per worker where possible, else an RSS watchdog.",
)
@click.option(
    "--worker-oom-score-adj",
    type=click.IntRange(0, 1000),
    default=None,
    envvar="OOMGUARD_WORKER_OOM_SCORE_ADJ",
    show_envvar=True,
    help="oom_score_adj of workers, so the kernel kills them first [default: 800].",
)
@click.option(
    "--max-tasks-per-worker",
    type=click.IntRange(min=0),
    default=None,
    envvar="OOMGUARD_MAX_TASKS_PER_WORKER",
    show_envvar=True,
    help="Replace a worker after N tasks (0: never).",
)
@click.option(
    "--memory-budget",
    callback=size,
    default=None,
    envvar="OOMGUARD_MEMORY_BUDGET",
    show_envvar=True,
    help="Memory the scheduler may hand out [default: machine or container limit minus a reserve].",
)
@click.option(
    "--task-memory",
    callback=size,
    default=None,
    envvar="OOMGUARD_TASK_MEMORY",
    show_envvar=True,
    help="Declared memory estimate for every task of the run.",
)
@click.option(
    "--memory-key",
    default=None,
    envvar="OOMGUARD_MEMORY_KEY",
    show_envvar=True,
    help="Parameter whose value keys learned memory estimates, e.g. n_agents.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    envvar="OOMGUARD_BATCH_SIZE",
    show_envvar=True,
    help="Most parameter groups (replicates + aggregation) open at once.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=None,
    envvar="OOMGUARD_RETRIES",
    show_envvar=True,
    help="Retries after a task error or timeout.",
)
@lost_retries_option
@click.option(
    "--timeout",
    "task_timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    envvar="OOMGUARD_TASK_TIMEOUT",
    show_envvar=True,
    help="Seconds a task may run (tasks that declare their own timeout keep it).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default=None,
    envvar="OOMGUARD_EXECUTOR",
    show_envvar=True,
    help="Where attempts run.",
)
@click.option(
    "--dask-address",
    default=None,
    envvar="OOMGUARD_DASK_ADDRESS",
    show_envvar=True,
    help="tcp://host:port of a Dask scheduler (with --executor dask).",
)
@click.option(
    "--dask-isolation",
    type=click.Choice(["auto", "cgroup", "watchdog", "thread"]),
    default=None,
    envvar="OOMGUARD_DASK_ISOLATION",
    show_envvar=True,
    help="Where attempts run on a Dask worker: auto (a child process in its own memory "
    "cgroup, else under the RSS watchdog), cgroup, watchdog, or thread (in the Dask "
    "worker itself: nothing isolated).",
)
@click.option(
    "--dask-local",
    type=click.IntRange(min=1),
    default=None,
    envvar="OOMGUARD_DASK_LOCAL",
    show_envvar=True,
    help="Start a local Dask cluster of N workers to try the dask executor.",
)
@notify_options
@json_option("Print one JSON object at the end.")
def run(
    task: str,
    params_file: str,
    replicates: int | None,
    aggregate: str | None,
    store: str,
    out: str | None,
    as_json: bool,
    dask_local: int | None,
    **options: Any,
) -> None:
    """Run TASK (module:function or path/to/file.py:function) for every line of --params.

    Running the same command again against the same store resumes the job: finished
    tasks are not run again.
    """
    from oomguard.jobs.task import load
    from oomguard.notify.build import check_notifications
    from oomguard.results.parquet import check_out_dir
    from oomguard.runner import Runner

    # Module references are looked up in this directory too (after everything installed),
    # here and in the workers (RunnerConfig.task_dir, the current directory by default).
    load(task, os.getcwd())
    if aggregate:
        load(aggregate, os.getcwd())
    if out is not None:
        check_out_dir(out)
    digest, _count = _params_file(params_file)
    closer = None
    if dask_local:
        options["executor"] = "dask"
    config = load_config(store=store, **{k: v for k, v in options.items() if v is not None})
    if dask_local:
        from oomguard.cli.dask_options import local_cluster

        # Its workers get the --worker-memory limit (and that MEMORY resource), so the
        # limit holds on Dask as it does on the local pool.
        address, closer = local_cluster(dask_local, config.worker_memory)
        config = dataclasses.replace(config, dask_address=address)
    check_notifications(config)  # a bad DSN or secret file: said before the store is opened
    log_to_stderr(config.log_format)
    # With JSON logs every line on stderr is JSON: the scheduler logs its start instead.
    plain = not as_json and config.log_format == "plain"
    stop_on_sigterm()
    status: dict[str, Any] = {}
    try:
        with Runner(config=config) as runner:
            view = runner.view()
            if plain:
                click.echo(
                    f"oomguard: isolation {view.isolation} ({view.isolation_reason}); "
                    f"budget {format_size(view.budget)}; {config.workers} workers",
                    err=True,
                )
                for warning in view.warnings:
                    click.echo(f"oomguard: warning: {warning}", err=True)
                if view.lost_attempts_recovered:
                    click.echo(
                        f"oomguard: resumed: {view.lost_attempts_recovered} attempt(s) of a "
                        "dead scheduler ended as lost and retried",
                        err=True,
                    )
            elif config.log_format == "json":
                for warning in view.warnings:
                    logging.getLogger("oomguard").warning("%s", warning)
            try:
                job = runner.sweep(
                    task,
                    _iter_params(params_file),
                    replicates=replicates,
                    aggregate=aggregate,
                    out=out,
                    name=f"params:{digest}",
                    title=f"{task} --params {params_file}",
                    batch_size=options.get("batch_size"),
                )
                status = job.wait(progress=plain and sys.stderr.isatty())
            except Exception:
                # The loop's own error, or the job's "scheduler stopped": said below,
                # once the runner has stopped its workers.
                if runner.died is None:
                    raise
    except Terminated:
        say("terminated", config.log_format)
        sys.exit(int(ExitCode.TERMINATED))
    finally:
        if closer is not None:
            closer()
    if runner.died is not None:
        died = runner.died
        say(
            f"the scheduler loop died ({type(died).__name__}: {died}; "
            "traceback above) and stopped its workers; run the same command again to resume "
            "the job",
            config.log_format,
            logging.ERROR,
        )
        sys.exit(int(ExitCode.SCHEDULER_DIED))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "job_id": status["job_id"],
                    "counts": status["counts"],
                    "failures_by_class": status["failures_by_class"],
                    "out": status["out"],
                    "state": status["state"],
                }
            )
        )
    else:
        print_status(status)
    if status["counts"]["failed"]:
        sys.exit(int(ExitCode.TASKS_FAILED))


def register(cli: click.Group) -> None:
    cli.add_command(run)


__all__ = ["register"]
