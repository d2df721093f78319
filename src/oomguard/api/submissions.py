"""``POST /v1/jobs``: a :class:`SubmitRequest` checked and written to the store as task rows.

Tasks are ``module:function`` references from the allowed task modules, called as
``fn(**args)``. Each task's arguments are JSON, at most ``max_task_bytes``; large ones are
kept in a blob file beside the store (:meth:`SqliteStore.params_row`), not in the row. A
submission is accepted whole or refused whole, and refused as early as it can be: its body
before it is parsed (:mod:`~oomguard.api.intake`), its size before any argument is built.
"""

from __future__ import annotations

import importlib
import inspect
import json
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from oomguard.api.intake import read_submission, too_many_tasks
from oomguard.api.schemas import SubmitRequest, SubmitResponse
from oomguard.errors import BackpressureError, PayloadError, TaskReferenceError
from oomguard.jobs.task import load, options_of, unwrap
from oomguard.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from oomguard.api.service import ServerSettings, ServerState

#: one group's arguments and their JSON text
GroupArgs = tuple[dict[str, Any], str]


def check_task(task_modules: tuple[str, ...], ref: str, fanout: int) -> Any:
    """The function named by ``ref`` if it is allowed, else TaskReferenceError."""
    module_name, _, name = ref.partition(":")
    if module_name not in task_modules:
        raise TaskReferenceError(
            f"task {ref!r} is not from an allowed task module ({', '.join(task_modules)})",
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


def submit(state: ServerState, body: bytes) -> SubmitResponse:
    """Read ``body``, then write the job and its tasks within the backpressure limits;
    refused whole. Runs on a worker thread.

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
    _check_batch(settings, ns, total)
    fn = check_task(settings.task_modules, req.task, req.fanout)
    store = state.stores.get()
    job_id = uuid.uuid4().hex[:12]
    batch = req.batch_size or settings.default_batch_size
    with state.backpressure.reserve(ns, total, job_id):
        groups = _group_params(req, inspect.signature(unwrap(fn)), settings.max_task_bytes)
        store.create_job(
            job_id,
            name=req.name or req.task,
            fn=req.task,
            agg=None,
            spec={"source": "http", "fanout": req.fanout},
            namespace=ns,
        )
        state.remember_job(job_id, ns)
        try:
            done = 0
            for rows, done in _rows(state, store, job_id, req, fn, groups, batch):
                store.add_tasks(rows, job_id=job_id, groups=done)
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


def _check_batch(settings: ServerSettings, namespace: str, total: int) -> None:
    """A batch larger than the server (or its namespace) may ever hold is refused for good
    (413 ``batch_too_large``): retrying it later would not help."""
    if settings.max_pending_tasks is not None and total > settings.max_pending_tasks:
        raise too_many_tasks(total, "--max-pending-tasks", settings.max_pending_tasks)
    quota = settings.namespace_quotas.get(namespace)
    if quota is not None and total > quota:
        raise too_many_tasks(total, f"the quota of namespace {namespace!r}", quota)


def _group_params(
    req: SubmitRequest, signature: inspect.Signature, max_task_bytes: int
) -> list[GroupArgs] | GroupArgs:
    """Each group's args and their JSON, checked for size and against the signature."""

    def check(args: dict[str, Any], index: int | None) -> GroupArgs:
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
            signature.bind(**call)
        except TypeError as err:
            raise PayloadError(
                f"{where}: {req.task} cannot be called with these arguments: {err}"
            ) from err
        return args, text

    if req.tasks is None:
        return check(req.args, None)
    return [check(dict(req.args, **item), i) for i, item in enumerate(req.tasks)]


def _rows(
    state: ServerState,
    store: SqliteStore,
    job_id: str,
    req: SubmitRequest,
    fn: Any,
    groups: list[GroupArgs] | GroupArgs,
    batch: int,
) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """Rows in chunks of about ``batch``, with the number of groups written so far."""
    opts = options_of(fn)
    build = state.runner.rows
    common: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    replicates = req.fanout if req.fanout > 1 else None
    for g in range(req.groups):
        if isinstance(groups, tuple):
            if common is None:
                # One args for every group: its fields and its blob (if any) are made once.
                common = build.common(store, req.task, groups[0], groups[1], opts)
            fields = common
        else:
            args, text = groups[g]
            fields = build.common(store, req.task, args, text, opts)
        rows.extend(build.group(job_id, g, fields, replicates))
        if len(rows) >= batch:
            yield rows, g + 1
            rows = []
    if rows:
        yield rows, req.groups


__all__ = ["check_task", "submit"]
