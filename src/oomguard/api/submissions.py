"""``POST /v1/jobs``: a :class:`SubmitRequest` checked and written to the store as task rows.

Tasks are ``module:function`` references from the allowed task modules, called as
``fn(**args)``, or programs the operator declared (``serve --commands``), named by
``command`` and filled from ``args``; ``aggregate``, ``memory``, ``memory_key``,
``retries`` and ``timeout`` are checked against the server's limits
(:func:`task_options`). Each task's arguments are JSON, at most ``max_task_bytes``; large
ones are kept in a blob file beside the store (:meth:`Store.params_row`), not in the row. A
submission is accepted whole or refused whole, and refused as early as it can be: its body
before it is parsed (:mod:`~oomguard.api.intake`), its size before any argument is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomguard.api.intake import read_submission, too_many_tasks
from oomguard.api.schemas import SubmitRequest, SubmitResponse
from oomguard.api.tenancy import ANONYMOUS, Grant
from oomguard.errors import (
    AccessDeniedError,
    BackpressureError,
    InvalidSizeError,
    PayloadError,
    TaskReferenceError,
)
from oomguard.jobs.command import Command
from oomguard.jobs.spec import JobSpec, job_spec
from oomguard.jobs.task import TaskOptions, load, options_of, unwrap
from oomguard.scheduler.rows import TaskFields
from oomguard.store.protocol import Store
from oomguard.store.records import NewTask, Quota, StoredSpec
from oomguard.units import format_size, parse_size

if TYPE_CHECKING:
    from oomguard.api.service import ServerSettings, ServerState

#: one group's arguments and their JSON text
GroupArgs = tuple[dict[str, object], str]


def check_task(task_modules: tuple[str, ...], ref: str, fanout: int) -> Callable[..., object]:
    """The function named by ``ref`` if it is allowed, else TaskReferenceError."""
    module_name, _, name = ref.partition(":")
    if module_name not in task_modules:
        raise TaskReferenceError(
            f"task {ref!r} is not from an allowed task module ({', '.join(task_modules)}): "
            "this server runs only functions of the modules it was started with "
            "(serve --tasks-module MODULE)",
            ref=ref,
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise TaskReferenceError(
            f"task module {module_name!r} cannot be imported: {err}", ref=ref
        ) from err
    obj = getattr(module, name, None)
    target = unwrap(obj) if obj is not None else None
    # Only functions defined in the module itself: not names it imported (time.sleep).
    if (
        target is None
        or name.startswith("_")
        or not inspect.isfunction(target)
        or target.__module__ != module.__name__
    ):
        raise TaskReferenceError(f"{module_name!r} has no task function {name!r}", ref=ref)
    if fanout > 1:
        params = inspect.signature(target).parameters
        if "replicate" not in params and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        ):
            raise PayloadError(
                f"fanout {fanout} calls {ref}(..., replicate=i), but it takes no replicate argument"
            )
    return load(ref)


def submit(state: ServerState, body: bytes, grant: Grant = ANONYMOUS) -> SubmitResponse:
    """Read ``body``, then write the job and its tasks within the backpressure limits;
    refused whole (403 where ``grant`` does not reach its namespace). Runs on a worker
    thread.

    Cheapest checks first: the body's size and shape (:func:`read_submission`), the batch
    against the server's limits, the task, the reservation (queue, quota, memory), and only
    then each task's arguments are built (serialised, sized, bound to the signature).
    """
    if state.scheduler_stopped:
        # Accepted work would wait for a scheduler that is not coming back in this
        # process: refuse it (503) while the server exits for its supervisor to restart it.
        raise BackpressureError(
            "the scheduler has stopped: this server takes no submissions until it is restarted",
            code="scheduler_stopped",
            retry_after=None,
        )
    settings = state.settings
    req = read_submission(body, settings.max_request_values, settings.max_pending_tasks)
    total = req.total
    ns = req.namespace
    if not grant.sees(ns):
        raise AccessDeniedError(
            f"token {grant.label!r} may not submit to namespace {ns!r}", label=grant.label
        )
    _check_batch(settings, ns, total)
    fn, ref = _callable(settings, req)
    agg = check_task(settings.task_modules, req.aggregate, 1) if req.aggregate else None
    opts = task_options(state, req, fn)
    spec = job_spec_of(req, ref, settings.default_batch_size)
    store = state.stores.get()
    job_id = uuid.uuid4().hex[:12]
    batch = spec.batch_size or settings.default_batch_size
    with state.backpressure.reserve(ns, total, job_id):
        groups = _group_params(req, _binder(fn), settings.max_task_bytes)
        store.create_job(
            job_id,
            name=spec.name or spec.reference,
            fn=spec.reference,
            agg=spec.aggregate_reference,
            spec=StoredSpec(source="http", fanout=req.fanout, command=req.command),
            namespace=spec.namespace,
            quota=_quota(state, ns, total),
        )
        state.remember_job(job_id, ns)
        try:
            done = 0
            call = _Call(ref, opts, spec.aggregate_reference, options_of(agg) if agg else None)
            for rows, done in _rows(state, store, job_id, req, call, groups, batch):
                store.add_tasks(rows, job_id=job_id, groups=done)
                state.runner.tasks_added()
            store.set_job_groups(job_id, done, sealed=True)
        except BaseException:
            # Not accepted: what was written is cancelled, never run half a batch.
            try:
                store.admin.cancel(job_id)
            finally:
                raise
    state.metrics.count_accepted(ns, total)
    return SubmitResponse(
        job_id=job_id,
        tasks=total,
        groups=req.groups,
        namespace=ns,
        status_url=f"/v1/jobs/{job_id}",
    )


def _quota(state: ServerState, namespace: str, total: int) -> Quota | None:
    """Replicas check the quotas again against the whole store, as the job is inserted:
    this server's counter knows only its own submissions since its last sync."""
    if not state.runner.config.replica:
        return None
    settings = state.settings
    return Quota(
        total,
        max_pending=settings.max_pending_tasks,
        namespace_quota=settings.namespace_quotas.get(namespace),
        max_namespaces=settings.max_namespaces,
        quoted=tuple(settings.namespace_quotas),
    )


def job_spec_of(req: SubmitRequest, ref: str, default_batch: int) -> JobSpec:
    """The HTTP model mapped onto a :class:`JobSpec` (its parameter sets are the request's
    ``args`` and ``tasks``, checked and bound by :func:`_group_params`; its memory is
    checked against this server's limits by :func:`task_options`)."""
    return job_spec(
        ref,
        (),
        replicates=req.fanout,
        aggregate=req.aggregate,
        name=req.name or req.task or f"command {req.command}",
        batch_size=req.batch_size or default_batch,
        namespace=req.namespace,
        memory_key=req.memory_key,
        retries=req.retries,
        timeout=req.timeout,
        declared=req.command is not None,
    )


def _check_batch(settings: ServerSettings, namespace: str, total: int) -> None:
    """A batch larger than the server (or its namespace) may ever hold is refused for good
    (413 ``batch_too_large``): retrying it later would not help."""
    if settings.max_pending_tasks is not None and total > settings.max_pending_tasks:
        raise too_many_tasks(total, "--max-pending-tasks", settings.max_pending_tasks)
    quota = settings.namespace_quotas.get(namespace)
    if quota is not None and total > quota:
        raise too_many_tasks(total, f"the quota of namespace {namespace!r}", quota)


def _callable(settings: ServerSettings, req: SubmitRequest) -> tuple[Callable[..., object], str]:
    """The function (or the operator's :class:`Command`) a submission names, and its
    reference."""
    if req.command is not None:
        program = settings.commands.get(req.command)
        if program is None:
            declared = ", ".join(sorted(settings.commands)) or "none: serve has no --commands"
            raise TaskReferenceError(
                f"no command named {req.command!r} on this server (declared: {declared})",
                ref=req.command,
            )
        return program, program.reference
    assert req.task is not None
    return check_task(settings.task_modules, req.task, req.fanout), req.task


def task_options(state: ServerState, req: SubmitRequest, fn: Callable[..., object]) -> TaskOptions:
    """The task's own options, with what the submission asks for, checked against the
    server's limits (its workers' memory, ``--max-retries``, ``--timeout``)."""
    config = state.runner.config
    opts = options_of(fn)
    if req.memory is not None:
        try:
            memory = parse_size(req.memory)
        except InvalidSizeError as err:
            raise PayloadError(f"memory: {err}") from None
        view = state.runner.view()
        cap = config.worker_memory or (view.budget if view.started else None)
        if memory <= 0 or (cap is not None and memory > cap):
            raise PayloadError(
                f"memory {format_size(memory)} is not what one task may get on this server "
                f"(more than 0, at most {format_size(cap or 0)}: serve --worker-memory / "
                "--memory-budget)"
            )
        opts = dataclasses.replace(opts, memory=memory)
    if req.retries is not None:
        if req.retries > state.settings.max_retries:
            raise PayloadError(
                f"retries {req.retries} is more than the {state.settings.max_retries} this "
                "server allows (serve --max-retries)"
            )
        opts = dataclasses.replace(opts, retries=req.retries)
    if req.timeout is not None:
        if config.task_timeout is not None and req.timeout > config.task_timeout:
            raise PayloadError(
                f"timeout {req.timeout:g} s is more than the {config.task_timeout:g} s this "
                "server allows (serve --timeout)"
            )
        opts = dataclasses.replace(opts, timeout=req.timeout)
    if req.memory_key is not None:
        opts = dataclasses.replace(opts, memory_key=req.memory_key)
    return opts


def _binder(fn: Callable[..., object]) -> Callable[[dict[str, object]], None]:
    """Checks one task's arguments against what it takes (TypeError when they do not fit)."""
    if isinstance(fn, Command):
        fields = fn.fields

        def fill(call: dict[str, object]) -> None:
            missing = sorted(fields - set(call))
            if missing:
                raise TypeError(f"missing argument(s) {', '.join(missing)} of its template")
            try:
                fn.args(call)  # each value checked by its field's type
            except PayloadError as err:
                raise TypeError(str(err)) from None

        return fill
    signature = inspect.signature(unwrap(fn))

    def bind(call: dict[str, object]) -> None:
        signature.bind(**call)

    return bind


@dataclass(frozen=True)
class _Call:
    """What each group's rows are made of: the task and (optionally) the aggregation."""

    ref: str
    opts: TaskOptions
    agg: str | None
    agg_opts: TaskOptions | None


def _group_params(
    req: SubmitRequest, bind: Callable[[dict[str, object]], None], max_task_bytes: int
) -> list[GroupArgs] | GroupArgs:
    """Each group's args and their JSON, checked for size and against the signature."""

    def check(args: dict[str, object], index: int | None) -> GroupArgs:
        where = "args" if index is None else f"tasks[{index}]"
        text = json.dumps(args, separators=(",", ":"))
        if len(text) > max_task_bytes:
            raise BackpressureError(
                f"{where}: {len(text)} bytes of arguments, more than the "
                f"{max_task_bytes} allowed per task",
                code="payload_too_large",
                retry_after=None,
            )
        call = dict(args, replicate=0) if req.fanout > 1 else args
        try:
            bind(call)
        except TypeError as err:
            what = req.task or f"command {req.command}"
            raise PayloadError(
                f"{where}: {what} cannot be called with these arguments: {err}"
            ) from err
        return args, text

    if req.tasks is None:
        return check(req.args, None)
    return [check(dict(req.args, **item), i) for i, item in enumerate(req.tasks)]


def _rows(
    state: ServerState,
    store: Store,
    job_id: str,
    req: SubmitRequest,
    call: _Call,
    groups: list[GroupArgs] | GroupArgs,
    batch: int,
) -> Iterator[tuple[list[NewTask], int]]:
    """Rows in chunks of about ``batch``, with the number of groups written so far."""
    opts = call.opts
    build = state.runner.rows
    common: TaskFields | None = None
    rows: list[NewTask] = []
    replicates = req.fanout if req.fanout > 1 else None
    for g in range(req.groups):
        if isinstance(groups, tuple):
            if common is None:
                # One args for every group: its fields and its blob (if any) are made once.
                common = build.common(store, call.ref, groups[0], groups[1], opts)
            fields, args = common, groups[0]
        else:
            args, text = groups[g]
            fields = build.common(store, call.ref, args, text, opts)
        aggregate = None
        if call.agg is not None and call.agg_opts is not None:
            aggregate = build.fields(call.agg, args, call.agg_opts)
        rows.extend(build.group(job_id, g, fields, replicates, aggregate))
        if len(rows) >= batch:
            yield rows, g + 1
            rows = []
    if rows:
        yield rows, req.groups


__all__ = ["check_task", "job_spec_of", "submit"]
