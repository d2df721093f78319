"""``oomguard run | status | results | retry | cancel``: jobs on a local store."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from oomguard.cli.exit_codes import ExitCode
from oomguard.cli.options import RUN_SECTIONS, SectionedCommand
from oomguard.cli.process import Terminated, log_to_stderr, say, stop_on_sigterm
from oomguard.cli.render import FAILURES_READ, next_steps, print_status, run_summary
from oomguard.cli.run_options import RUN_OPTIONS, run_options
from oomguard.cli.spec import SpecReader, is_spec, merge, parameter_rows
from oomguard.config import config_from, config_source
from oomguard.errors import ConfigError, JobStoppedError, PayloadError
from oomguard.jobs.jsonvalue import JSONObject
from oomguard.jobs.spec import JobSpec, job_spec
from oomguard.units import format_size

if TYPE_CHECKING:
    from oomguard.jobs.command import Command
    from oomguard.jobs.status import Failure, JobStatus


class RunCommand(SectionedCommand):
    """``oomguard run``: its ``--help`` in sections."""

    sections = RUN_SECTIONS


@click.command(cls=RunCommand)
@click.argument("task", required=False)
@run_options
def run(**given: object) -> None:
    """Run TASK (module:function or path/to/file.py:function), or the program of --cmd,
    for every line of --params; or run the job a spec file describes (TASK is then a
    .toml or .json file: see the README, "Jobs as files").

    Running the same command again against the same store resumes the job: finished
    tasks are not run again.
    """
    from oomguard.results.parquet import check_out_dir

    ctx = click.get_current_context()
    task = _text(given["task"])
    sets = given["sets"]
    sets = tuple(str(item) for item in sets) if isinstance(sets, tuple) else ()
    job: JSONObject = {}
    values = dict(given)
    if is_spec(task):
        assert task is not None
        spec = SpecReader(RUN_OPTIONS).read(ctx, task, sets)
        values = merge(ctx, spec, given)
        job, task = spec.job, None
    elif sets:
        raise ConfigError("--set changes keys of a spec file: give one (oomguard run study.toml)")
    fn, label = _task(task, values, job)
    aggregate = _text(values.pop("aggregate"))
    if aggregate:
        from oomguard.jobs.task import load

        load(aggregate, os.getcwd())
    params_file = _text(values.pop("params_file"))
    # With an aggregation, tasks get replicate= even without --replicates (Runner.sweep).
    replicates = _number(values.pop("replicates"))
    params, digest, source = _parameters(params_file, job, fn, bool(replicates or aggregate))
    name = _text(values.pop("name")) or _text(job.get("name")) or f"{source}:{digest}"
    out = _text(values.pop("out"))
    if out is not None:
        check_out_dir(out)
    title = f"{label} --params {params_file}" if params_file else f"{label} ({given['task']})"
    submission = job_spec(
        fn,
        params,
        replicates=replicates,
        aggregate=aggregate,
        name=name,
        title=title,
        out=out,
        batch_size=_number(values.get("batch_size")),
    )
    _sweep(submission, values)


def _text(value: object) -> str | None:
    """An option's value that is a string (None when not given)."""
    return value if isinstance(value, str) else None


def _number(value: object) -> int | None:
    """An option's value that is a whole number (None when not given)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _task(
    task: str | None, values: dict[str, object], job: JSONObject
) -> tuple[str | Command, str]:
    """The task function's reference (checked) or the :class:`Command`, and its label."""
    from oomguard.jobs.command import command
    from oomguard.jobs.task import load

    cmd, shell = values.pop("cmd"), values.pop("shell")
    if cmd is not None and task is not None:
        raise ConfigError("give TASK or --cmd, not both")
    if cmd is None and task is None and "command" in job:
        raise ConfigError(
            "command names a program a server declared: submit this spec to it with "
            "oomguard submit SPEC --server URL (or give cmd here)"
        )
    if cmd is None and task is None:
        cmd = job.get("cmd")
        shell = job.get("shell") if shell is None else shell
        task = _text(job.get("task"))
    if isinstance(cmd, list):
        cmd = [str(part) for part in cmd]
    if isinstance(cmd, str | list):
        program = command(cmd, bool(shell))
        return program, str(program)
    if shell:
        raise ConfigError("--shell goes with --cmd")
    if not isinstance(task, str):
        raise ConfigError("no task: give TASK, --cmd, or a spec file with task or cmd")
    # Module references are looked up in this directory too (after everything installed),
    # here and in the workers (RunnerConfig.task_dir, the current directory by default).
    load(task, os.getcwd())
    return task, task


def _parameters(
    params_file: str | None, job: JSONObject, fn: str | Command, numbered: bool
) -> tuple[Iterable[JSONObject], str, str]:
    """The parameter sets (streamed from a file), their digest and where they came from."""
    found = parameter_rows(params_file, job)
    if found is None:
        raise ConfigError("no parameters: give --params, or params, rows or [grid] in a spec")
    rows, digest, source = found
    if not isinstance(fn, str) and isinstance(rows, list):
        _check_fields(fn, rows, numbered)
    return rows, digest, source


def _check_fields(program: Command, rows: list[JSONObject], numbered: bool) -> None:
    # Said before anything runs, not as one error per task.
    have = {"replicate"} if numbered else set()
    for i, row in enumerate(rows):
        missing = sorted(program.fields - have - set(row))
        if missing:
            raise PayloadError(
                f"parameter set {i} has no {', '.join(missing)}, which the command uses "
                f"({program})",
                index=i,
            )


def _sweep(spec: JobSpec, values: dict[str, object]) -> None:
    from oomguard.notify.build import check_notifications
    from oomguard.runner import Runner, job_failures

    store, as_json, dask_local = (
        str(values.pop("store")),
        bool(values.pop("as_json")),
        _number(values.pop("dask_local")),
    )
    for key in ("task", "sets"):
        values.pop(key, None)
    options = values
    closer = None
    if dask_local:
        options["executor"] = "dask"
    source = config_source(_text(options.pop("config_file")), implicit=True)
    if source.note:  # before the file is read: its errors follow this line
        say(source.note, _text(options.get("log_format")) or "plain")
    given = {k: v for k, v in options.items() if v is not None}
    config = config_from(given | {"store": store}, source=source)
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
    status: JobStatus | None = None
    failures: list[Failure] = []
    job_id: str | None = None
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
                job = runner.submit_job(spec)
                job_id = job.id
                status = job.wait(progress=plain and sys.stderr.isatty())
            except JobStoppedError as err:
                # Its first attempts all failed loading the task: said below, with them.
                status = runner.job(err.job_id).status()
            except Exception:
                # The loop's own error, or the job's "scheduler stopped": said below,
                # once the runner has stopped its workers.
                if runner.died is None:
                    raise
            if status is not None and not as_json:
                failures = job_failures(runner.store, status.job_id, FAILURES_READ)
    except KeyboardInterrupt:
        say(stopped_message("interrupted", config.store, job_id), config.log_format)
        sys.exit(int(ExitCode.INTERRUPTED))
    except Terminated:
        say(stopped_message("terminated", config.store, job_id), config.log_format)
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
    assert status is not None  # the job was waited for, or stopped: either way it has one
    if as_json:
        click.echo(run_summary(status))
    else:
        print_status(status, failures)
        click.echo(next_steps(config.store, status))
    if status.counts.get("failed") or status.stopped:
        sys.exit(int(ExitCode.TASKS_FAILED))


def stopped_message(how: str, store: str, job_id: str | None) -> str:
    """What ``run`` says when it is stopped (Ctrl-C, SIGTERM): how far the job got and
    how to go on. Its scheduler has stopped: attempts in flight ended ``interrupted`` and
    run again on resume (docs/ARCHITECTURE.md, "The failure path")."""
    from oomguard.jobs.model import FINISHED_STATES
    from oomguard.store.factory import open_store

    if job_id is None:
        return f"{how} while the job's tasks were being stored; run the same command to resume"
    try:
        with open_store(store, create=False) as st:
            counts = st.queries.counts(job_id)
    except Exception as err:  # the store is what we could not read: say so, not more
        return (
            f"{how}; job {job_id}: its counts could not be read ({err}); run the same "
            "command to resume"
        )
    done = sum(counts[s] for s in FINISHED_STATES)
    total = sum(counts.values())
    return (
        f"{how}: job {job_id}: {done} of {total} tasks done; the attempts that were running "
        "ended as interrupted and run again; run the same command to resume"
    )


def register(cli: click.Group) -> None:
    cli.add_command(run)


__all__ = ["register"]
