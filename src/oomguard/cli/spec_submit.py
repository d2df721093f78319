"""``oomguard submit study.toml --server URL``: a spec file as the body of ``POST /v1/jobs``.

The spec is read and checked as ``oomguard run`` reads it (:mod:`oomguard.cli.spec`);
what a submission can carry is sent (the task, or ``command``: the name of a program the
server's operator declared; the parameters as ``tasks``; ``replicates`` as ``fanout``;
``aggregate``, ``task-memory`` as ``memory``, ``memory-key``, ``retries``, ``timeout``,
``name``); the server checks them against its limits. Keys that set up a local run
(``workers``, ``store``, ``out``, ...) are the server's to decide: they are named on
stderr and not sent. A ``cmd`` is refused: nothing sent over the network becomes a
command line (docs/ARCHITECTURE.md, "Command tasks").
"""

from __future__ import annotations

import os

import click

from oomguard.cli.run_options import RUN_OPTIONS
from oomguard.cli.spec import (
    SpecReader,
    job_str,
    option_float,
    option_int,
    option_str,
    parameter_rows,
)
from oomguard.errors import ConfigError
from oomguard.jobs.spec import JobSpec, job_spec

#: spec options (parameter names) a submission carries (as aggregate, memory,
#: memory_key, retries and timeout)
SENT = ("aggregate", "task_memory", "memory_key", "retries", "task_timeout")


def spec_body(ctx: click.Context, path: str, sets: tuple[str, ...]) -> dict[str, object]:
    """The submission a spec file describes, as the body of ``POST /v1/jobs``."""
    return submission_body(spec_job(ctx, path, sets))


def spec_job(ctx: click.Context, path: str, sets: tuple[str, ...]) -> JobSpec:
    """The job a spec file describes, as a server would run it (what only a local run
    uses is named on stderr and left out)."""
    spec = SpecReader(RUN_OPTIONS).read(ctx, path, sets)
    job = spec.job
    if "cmd" in job:
        raise ConfigError(
            f"{path}: cmd: a server runs only the programs its operator declared "
            "(serve --commands): name one with command = NAME"
        )
    if "command" not in job and "task" not in job:
        raise ConfigError(f"{path}: no task: give task or command")
    for key in ("task", "aggregate"):
        _refuse_file(path, key, job.get(key) if key == "task" else spec.options.get(key))
    found = parameter_rows(option_str(spec, "params_file"), job)
    if found is None:
        raise ConfigError(f"{path}: no parameters: give params, rows or [grid]")
    taken = {"params_file", "replicates", *SENT}
    left = sorted(
        k.replace("_", "-") for k, v in spec.options.items() if v is not None and k not in taken
    )
    if left:
        click.echo(
            f"oomguard: note: {path}: {', '.join(left)} set up a local run: the server uses "
            "its own settings",
            err=True,
        )
    return job_spec(
        str(job.get("command") or job["task"]),
        list(found[0]),
        replicates=option_int(spec, "replicates"),
        aggregate=option_str(spec, "aggregate"),
        name=job_str(spec, "name"),
        memory=option_int(spec, "task_memory"),
        memory_key=option_str(spec, "memory_key"),
        retries=option_int(spec, "retries"),
        timeout=option_float(spec, "task_timeout"),
        declared="command" in job,
    )


def submission_body(spec: JobSpec) -> dict[str, object]:
    """A :class:`JobSpec` as the HTTP model (:class:`oomguard.api.schemas.SubmitRequest`)
    takes it: only what was given."""
    body: dict[str, object] = {"command" if spec.declared else "task": spec.reference}
    body["tasks"] = [dict(p) for p in spec.params]
    if spec.name is not None:
        body["name"] = spec.name
    if spec.replicates is not None and not (
        spec.aggregate_reference is not None and spec.replicates == 1
    ):
        body["fanout"] = spec.replicates
    fields = {
        "aggregate": spec.aggregate_reference,
        "memory": spec.memory,
        "memory_key": spec.memory_key,
        "retries": spec.retries,
        "timeout": spec.timeout,
    }
    body.update((key, value) for key, value in fields.items() if value is not None)
    return body


def _refuse_file(path: str, key: str, ref: object) -> None:
    """Said before any request: a server imports no file sent to it (docs/ARCHITECTURE.md,
    "Server mode"), so a ``file.py:function`` spec runs only locally."""
    if not isinstance(ref, str) or ":" not in ref:
        return
    where, _, name = ref.rpartition(":")
    if not (where.endswith(".py") or "/" in where or os.sep in where):
        return
    module = os.path.splitext(os.path.basename(where))[0]
    raise ConfigError(
        f"{path}: {key} = {ref!r} names a file, and a server imports no file sent to it: it "
        "runs only functions of the modules it was started with (serve --tasks-module "
        "MODULE, repeatable; by default oomguard.examples). To run this spec on a server, "
        f"put {name} in a module the server can import (installed, or on its PYTHONPATH), "
        f'start it with --tasks-module {module} and write {key} = "{module}:{name}"; '
        f"or run it here: oomguard run {path}"
    )


__all__ = ["spec_body", "spec_job", "submission_body"]
