"""The HTTP clients of an ``oomguard serve``: ``submit``, ``submit-batch``, ``profile
heap``, and :func:`remote_status` (``oomguard status --server URL``)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

from oomguard.cli.exit_codes import ExitCode
from oomguard.cli.options import env, json_option, token_option
from oomguard.cli.render import FAILURES_READ, print_heap, print_status, print_submitted
from oomguard.errors import OomguardError
from oomguard.jobs.jsonvalue import JSON, JSONObject

if TYPE_CHECKING:
    from oomguard.api.client import ApiClient

F = TypeVar("F", bound=Callable[..., object])


def exit_code_for_client(err: OomguardError) -> ExitCode:
    from oomguard.api.client import ApiError, ServerConnectionError

    if isinstance(err, ServerConnectionError):
        return ExitCode.CONNECTION
    if isinstance(err, ApiError):
        status = int(getattr(err, "status", 0))
        if status == 404:
            return ExitCode.NOT_FOUND
        if status in (400, 413, 415, 422):
            return ExitCode.PAYLOAD
        if status == 429:
            return ExitCode.BACKPRESSURE
        if status in (401, 403):
            return ExitCode.USAGE
        return ExitCode.UNAVAILABLE
    return ExitCode.USAGE


def _client_errors(fn: F) -> F:
    """Connection and HTTP errors become a message and an exit code (never a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        # Imported when a client command runs: the HTTP stack is not every command's cost.
        from oomguard.api.client import ApiError, ServerConnectionError

        try:
            return fn(*args, **kwargs)
        except (ApiError, ServerConnectionError) as err:
            click.echo(f"oomguard: error: {err}", err=True)
            raise SystemExit(int(exit_code_for_client(err))) from None

    return wrapper  # type: ignore[return-value]


def _args(text: str | None) -> JSONObject:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not valid JSON: {err}", param_hint="--args") from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object of keyword arguments", param_hint="--args")
    return value


def _objects(value: JSON) -> list[JSONObject]:
    """The objects of a list an answer holds (an answer's ``jobs``, ``failures``)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _client(server: str, token_file: str | None, retries: int = 8) -> ApiClient:
    from oomguard.api.client import ApiClient, load_token

    return ApiClient(server, load_token(token_file), retries=retries)


server_option = click.option(
    "--server",
    required=True,
    metavar="URL",
    help="URL of an oomguard serve server",
    **env("SERVER"),
)
retries_option = click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="retries of a submission refused with 429 (exponential backoff, Retry-After)",
    **env("RETRIES"),
)


@click.command()
@click.argument("task")
@server_option
@click.option(
    "--args",
    "args_json",
    default=None,
    metavar="JSON",
    **env("ARGS"),
    help="keyword arguments as a JSON object",
)
@click.option("--namespace", default="default", show_default=True, **env("NAMESPACE"))
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    **env("SET"),
    help="change a key of the spec file (repeat), as for oomguard run",
)
@token_option()
@retries_option
@json_option()
@_client_errors
def submit(
    task: str,
    server: str,
    args_json: str | None,
    namespace: str,
    sets: tuple[str, ...],
    token_file: str | None,
    retries: int,
    as_json: bool,
) -> None:
    """Submit one TASK (module:function) with JSON arguments to a server; or the job a
    spec file describes (TASK is then a .toml or .json file, as for `oomguard run`)."""
    from oomguard.cli.spec import is_spec

    if is_spec(task):
        from oomguard.cli.spec_submit import spec_body

        body = spec_body(click.get_current_context(), task, sets)
        body["namespace"] = namespace
        if args_json is not None:
            body["args"] = _args(args_json)
    else:
        if sets:
            raise click.UsageError("--set changes keys of a spec file: give one")
        body = {"task": task, "args": _args(args_json), "namespace": namespace}
    with _client(server, token_file, retries) as client:
        print_submitted(client.post("/v1/jobs", body), as_json)


@click.command("submit-batch")
@click.argument("task")
@server_option
@click.option(
    "--count", type=click.IntRange(min=1), required=True, **env("COUNT"), help="parameter groups"
)
@click.option(
    "--fanout",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    **env("FANOUT"),
    help="tasks per group, called with replicate=0..F-1",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    **env("BATCH_SIZE"),
    help="rows per insert transaction on the server",
)
@click.option(
    "--args",
    "args_json",
    default=None,
    metavar="JSON",
    **env("ARGS"),
    help="keyword arguments of every task, as a JSON object",
)
@click.option("--namespace", default="default", show_default=True, **env("NAMESPACE"))
@token_option()
@retries_option
@json_option()
@_client_errors
def submit_batch(
    task: str,
    server: str,
    count: int,
    fanout: int,
    batch_size: int | None,
    args_json: str | None,
    namespace: str,
    token_file: str | None,
    retries: int,
    as_json: bool,
) -> None:
    """Submit COUNT x FANOUT tasks of TASK as one job (accepted whole or refused whole)."""
    body: dict[str, object] = {
        "task": task,
        "args": _args(args_json),
        "namespace": namespace,
        "count": count,
        "fanout": fanout,
    }
    if batch_size is not None:
        body["batch_size"] = batch_size
    with _client(server, token_file, retries) as client:
        print_submitted(client.post("/v1/jobs", body), as_json)


@click.group()
def profile() -> None:
    """Profile a running server."""


@profile.command("heap")
@server_option
@token_option()
@click.option("--limit", type=click.IntRange(1, 500), default=25, show_default=True, **env("LIMIT"))
@json_option()
@_client_errors
def profile_heap(server: str, token_file: str | None, limit: int, as_json: bool) -> None:
    """Top allocation sites of a server started with --heap-profiling."""
    with _client(server, token_file) as client:
        report = client.get("/v1/debug/heap", limit=limit)
    print_heap(report, as_json)


def remote_status(
    url: str, job: str | None, token_file: str | None, as_json: bool, show_failures: int = 5
) -> int:
    """``oomguard status --server URL [JOB]``: print a job's status; return the exit code.

    Without JOB, the newest job. ``TASKS_FAILED`` when the job finished with failures.
    """
    from oomguard.api.client import ApiError, ServerConnectionError
    from oomguard.jobs.status import Failure, JobStatus

    try:
        with _client(url, token_file) as client:
            if job is None:
                jobs = _objects(client.get("/v1/jobs", limit=1).get("jobs"))
                if not jobs:
                    click.echo("oomguard: error: the server has no jobs", err=True)
                    return int(ExitCode.NOT_FOUND)
                job = str(jobs[0]["job_id"])
            status = client.get(f"/v1/jobs/{job}")
            counts = status.get("counts")
            failures = (
                _objects(
                    client.get(f"/v1/jobs/{job}/failures", limit=FAILURES_READ).get("failures")
                )
                if isinstance(counts, dict) and counts.get("failed")
                else []
            )
    except (ApiError, ServerConnectionError) as err:
        click.echo(f"oomguard: error: {err}", err=True)
        return int(exit_code_for_client(err))
    if as_json:
        click.echo(json.dumps({**status, "failures": failures[:show_failures]}))
    else:
        told = [Failure.from_json(f) for f in failures]
        print_status(JobStatus.from_json(status), told, groups=show_failures)
    return int(ExitCode.TASKS_FAILED if status["state"] == "failed" else ExitCode.OK)


def register(cli: click.Group) -> None:
    for command in (submit, submit_batch, profile):
        cli.add_command(command)


__all__ = ["exit_code_for_client", "register", "remote_status"]
