"""The HTTP API: :func:`create_app` over a :class:`ServerState` (runner + backpressure).

Tasks arrive as ``module:function`` references from the allowed task modules with JSON
arguments, are written to the store (``params``), and run as ``fn(**args)``. Nothing from
the network is ever unpickled: pickle bodies are refused with 415 before they are read.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import secrets
import sqlite3
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oomguard.api.backpressure import Backpressure, MemoryPressure
from oomguard.api.metrics import CONTENT_TYPE, ServerMetrics
from oomguard.api.schemas import (
    CancelResponse,
    ErrorBody,
    Health,
    HeapReport,
    HeapSite,
    JobList,
    JobStatus,
    JobSummary,
    SubmitRequest,
    SubmitResponse,
    TaskInfo,
    TaskList,
)
from oomguard.errors import (
    BackpressureError,
    ConfigError,
    JobNotFoundError,
    OomguardError,
    PayloadError,
    TaskReferenceError,
)
from oomguard.jobs.task import load, options_of, unwrap
from oomguard.scheduler.runner import Runner, job_status
from oomguard.store.sqlite import SqliteStore

OPEN_STATES = "('pending', 'ready', 'queued', 'running')"
PICKLE_TYPES = (
    "application/octet-stream",
    "application/python-pickle",
    "application/x-pickle",
    "application/pickle",
    "application/x-python-pickle",
)
GIB = 1024**3


def container_memory_limit() -> int | None:
    """The memory limit of the cgroup this process runs in (None: unlimited/unknown)."""
    from oomguard.oom.cgroupinfo import locate_memory_cgroup, memory_limit_of

    version, directory, top, _ = locate_memory_cgroup()
    if version is None or directory is None or top is None:
        return None
    return memory_limit_of(directory, top, version)


def resolve_scheduler_memory_limit(configured: int | None, container: int | None) -> int:
    """The scheduler's own limit: configured, or half the container's, or 1 GiB."""
    if configured is not None:
        if configured <= 0:
            raise ConfigError("--scheduler-memory-limit must be larger than 0")
        if container is not None and configured > container:
            raise ConfigError(
                f"--scheduler-memory-limit {configured} bytes is above the container's "
                f"memory limit ({container} bytes)"
            )
        return configured
    return container // 2 if container is not None else GIB


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``oomguard serve`` configures (built by the CLI, passed down)."""

    store: str
    workers: int | None = None
    task_modules: tuple[str, ...] = ("oomguard.examples",)
    token: str | None = None
    max_pending_tasks: int | None = 100_000
    namespace_quotas: dict[str, int] = field(default_factory=dict)
    scheduler_memory_limit: int = GIB
    heap_profiling: bool = False
    #: arguments of one task (JSON) larger than this are refused
    max_task_bytes: int = 1024 * 1024
    #: request bodies larger than this are refused before they are read
    max_request_bytes: int = 64 * 1024 * 1024
    default_batch_size: int = 5000
    pending_poll_interval: float = 0.5
    rss_sample_interval: float = 0.2
    runner_options: dict[str, Any] = field(default_factory=dict)


class _Stores:
    """One SqliteStore per thread (sqlite connections are per thread), closed together."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[SqliteStore] = []
        self._lock = threading.Lock()

    def get(self) -> SqliteStore:
        store: SqliteStore | None = getattr(self._local, "store", None)
        if store is None:
            store = SqliteStore(self.path)
            self._local.store = store
            with self._lock:
                self._all.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                with suppress(sqlite3.Error):
                    store.close()
            self._all.clear()


class ServerState:
    """The runner, the backpressure state and the threads that keep it current."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.runner = Runner(
            store=settings.store, workers=settings.workers, **settings.runner_options
        )
        self.stores = _Stores(self.runner.config.store)
        self.backpressure = Backpressure(
            max_pending=settings.max_pending_tasks,
            namespace_quotas=dict(settings.namespace_quotas),
            pressure=MemoryPressure(settings.scheduler_memory_limit),
        )
        self.metrics = ServerMetrics(self)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._namespaces: dict[str, str] = {}
        self._cache: dict[str, tuple[float, Any]] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._failures_seen = 0
        self._failures_lock = threading.Lock()
        self._full_window = self.runner.config.window
        self._me = psutil.Process()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        if self.settings.heap_profiling and not tracemalloc.is_tracing():
            tracemalloc.start(10)
        self.runner.start()
        self.poll_pending()
        self.sample_rss()
        for name, target in (("pending", self._pending_loop), ("rss", self._rss_loop)):
            thread = threading.Thread(target=target, name=f"oomguard-api-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        self.stores.close()
        self.runner.close()

    def _pending_loop(self) -> None:
        while not self._stop.wait(self.settings.pending_poll_interval):
            try:
                self.poll_pending()
            except sqlite3.Error:
                continue  # a busy store: the counter stays as it was until the next poll

    def _rss_loop(self) -> None:
        while not self._stop.wait(self.settings.rss_sample_interval):
            self.sample_rss()

    # -- pending tasks and memory -----------------------------------------------------

    def poll_pending(self) -> None:
        """Count the store's open tasks by namespace (uses the partial index tasks_open)."""
        store = self.stores.get()
        counter = self.backpressure.pending
        counter.begin_sync()
        rows = store.db.execute(
            f"SELECT job_id, COUNT(*) FROM tasks WHERE state IN {OPEN_STATES} GROUP BY job_id"
        ).fetchall()
        by_ns: dict[str, int] = {}
        for job_id, n in rows:
            ns = self._namespaces.get(job_id)
            if ns is None:
                row = store.db.execute(
                    "SELECT namespace FROM jobs WHERE id = ?", (job_id,)
                ).fetchone()
                ns = str(row[0]) if row else "default"
                self._namespaces[job_id] = ns
            by_ns[ns] = by_ns.get(ns, 0) + int(n)
        counter.sync(by_ns)

    def sample_rss(self) -> None:
        pressure = self.backpressure.pressure
        assert pressure is not None
        try:
            rss = int(self._me.memory_info().rss)
        except psutil.Error:
            return
        was = pressure.active
        if pressure.update(rss) != was:
            # Under pressure the scheduler keeps fewer tasks in memory (refilled from
            # the store later); restored once the pressure is gone.
            window = max(4 * self.runner.config.workers, self._full_window // 8)
            self._set_window(window if pressure.active else self._full_window)

    def _set_window(self, size: int) -> None:
        sched = self.runner.scheduler
        if sched is not None:
            sched.set_window(size)

    # -- metrics source ---------------------------------------------------------------

    def _cached(self, key: str, ttl: float, compute: Any) -> Any:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        value = compute()
        self._cache[key] = (now, value)
        return value

    def task_counts(self) -> dict[str, int]:
        def compute() -> dict[str, int]:
            db = self.stores.get().db
            return {
                str(s): int(n)
                for s, n in db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state")
            }

        result: dict[str, int] = self._cached("tasks", 1.0, compute)
        return result

    def failed_tasks(self) -> dict[tuple[str, str], int]:
        def compute() -> dict[tuple[str, str], int]:
            db = self.stores.get().db
            return {
                (str(c), str(f)): int(n)
                for c, f, n in db.execute(
                    "SELECT COALESCE(failure_class, 'unknown'), fn, COUNT(*) FROM tasks "
                    "WHERE state = 'failed' GROUP BY 1, 2"
                )
            }

        result: dict[tuple[str, str], int] = self._cached("failed", 5.0, compute)
        return result

    def failure_counts(self) -> dict[tuple[str, str], int]:
        """Failed attempts by (class, function), read incrementally: attempts are ended in
        id order up to the oldest running one, so each is counted once."""
        db = self.stores.get().db
        with self._failures_lock:
            row = db.execute(
                "SELECT (SELECT MIN(id) FROM attempts WHERE state = 'running'), "
                "(SELECT MAX(id) FROM attempts)"
            ).fetchone()
            upper = (row[0] - 1) if row[0] is not None else (row[1] or 0)
            if upper > self._failures_seen:
                for cls, fn, n in db.execute(
                    "SELECT a.failure_class, t.fn, COUNT(*) FROM attempts a JOIN tasks t "
                    "ON t.id = a.task_id WHERE a.id > ? AND a.id <= ? AND "
                    "a.failure_class IS NOT NULL GROUP BY a.failure_class, t.fn",
                    (self._failures_seen, upper),
                ):
                    key = (str(cls), str(fn))
                    self._failures[key] = self._failures.get(key, 0) + int(n)
                self._failures_seen = upper
            return dict(self._failures)

    def scheduler_rss(self) -> int:
        pressure = self.backpressure.pressure
        return pressure.last_rss if pressure is not None else 0

    def scheduler_memory_limit(self) -> int:
        return self.settings.scheduler_memory_limit

    def memory_budget(self) -> int | None:
        sched = self.runner.scheduler
        return int(sched.budget) if sched is not None and sched.started else None

    def memory_admitted(self) -> int | None:
        sched = self.runner.scheduler
        if sched is None or not sched.started:
            return None
        for _ in range(3):
            try:  # the scheduler thread changes the dict while we read it
                return int(sum(list(sched.admission.admitted.values())))
            except RuntimeError:
                continue
        return None

    def _pool(self) -> Any:
        sched = self.runner.scheduler
        executor = getattr(sched, "executor", None)
        return getattr(executor, "pool", None)

    def worker_rss(self) -> dict[str, int]:
        from oomguard.worker.pool import tree_rss

        pool = self._pool()
        if pool is None:
            return {}
        return {w.name: tree_rss(w.pid) for w in list(pool.workers.values())}

    def worker_recycles(self) -> dict[str, int]:
        pool = self._pool()
        return dict(pool.recycles) if pool is not None else {}

    # -- submissions ------------------------------------------------------------------

    def check_task(self, ref: str, fanout: int) -> Any:
        """The function named by ``ref`` if it is allowed, else TaskReferenceError."""
        module_name, _, name = ref.partition(":")
        if module_name not in self.settings.task_modules:
            raise TaskReferenceError(
                f"task {ref!r} is not from an allowed task module "
                f"({', '.join(self.settings.task_modules)})",
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
                    f"fanout {fanout} calls {ref}(..., replicate=i), but it "
                    "takes no replicate argument"
                )
        return load(ref)

    def submit(self, req: SubmitRequest) -> SubmitResponse:
        fn = self.check_task(req.task, req.fanout)
        signature = inspect.signature(unwrap(fn))
        groups = self._group_params(req, signature)
        total = req.total
        ns = req.namespace
        store = self.stores.get()
        job_id = uuid.uuid4().hex[:12]
        batch = req.batch_size or self.settings.default_batch_size
        with self.backpressure.reserve(ns, total):
            store.create_job(
                job_id,
                name=req.name or req.task,
                fn=req.task,
                agg=None,
                spec={"source": "http", "fanout": req.fanout},
                namespace=ns,
            )
            self._namespaces[job_id] = ns
            try:
                done = 0
                for rows, done in self._rows(job_id, req, fn, groups, batch):
                    store.add_tasks(rows, job_id=job_id, groups=done)
                store.set_job_groups(job_id, done, sealed=True)
            except BaseException:
                # Not accepted: what was written is cancelled, never run half a batch.
                try:
                    store.cancel(job_id)
                finally:
                    raise
        self.metrics.accepted.labels(ns).inc(total)
        return SubmitResponse(
            job_id=job_id,
            tasks=total,
            groups=req.groups,
            namespace=ns,
            status_url=f"/v1/jobs/{job_id}",
        )

    def _group_params(
        self,
        req: SubmitRequest,
        signature: inspect.Signature,
    ) -> list[tuple[dict[str, Any], str]] | tuple[dict[str, Any], str]:
        """Each group's args and their JSON, checked for size and against the signature."""

        def check(args: dict[str, Any], index: int | None) -> tuple[dict[str, Any], str]:
            where = "args" if index is None else f"tasks[{index}]"
            text = json.dumps(args, separators=(",", ":"))
            if len(text) > self.settings.max_task_bytes:
                raise BackpressureError(
                    f"{where}: {len(text)} bytes of arguments, more than the "
                    f"{self.settings.max_task_bytes} allowed per task",
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
        self,
        job_id: str,
        req: SubmitRequest,
        fn: Any,
        groups: list[tuple[dict[str, Any], str]] | tuple[dict[str, Any], str],
        batch: int,
    ) -> Iterator[tuple[list[dict[str, Any]], int]]:
        """Rows in chunks of about ``batch``, with the number of groups written so far."""
        opts = options_of(fn)
        common: dict[str, Any] | None = None
        rows: list[dict[str, Any]] = []
        for g in range(req.groups):
            if isinstance(groups, tuple):
                args, text = groups
                if common is None:
                    common = self.runner.task_fields(req.task, args, opts)
                fields = common
            else:
                args, text = groups[g]
                fields = self.runner.task_fields(req.task, args, opts)
            for r in range(req.fanout):
                rows.append(
                    dict(
                        fields,
                        job_id=job_id,
                        grp=g,
                        kind="task",
                        replicate=r if req.fanout > 1 else None,
                        params=text,
                        state="ready",
                    )
                )
            if len(rows) >= batch:
                yield rows, g + 1
                rows = []
        if rows:
            yield rows, req.groups


def _error(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


class _Guard:
    """ASGI middleware: bearer token, refusal of pickle bodies, request size limit."""

    def __init__(self, app: ASGIApp, token: str | None, max_bytes: int) -> None:
        self.app = app
        self.token = token
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        if self.token is not None and scope["path"] != "/healthz":
            given = headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(
                value.strip().encode(), self.token.encode()
            ):
                await _error(
                    401,
                    "unauthorized",
                    "a bearer token is required",
                    headers={"WWW-Authenticate": "Bearer"},
                )(scope, receive, send)
                return
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope["method"] in ("POST", "PUT", "PATCH") and ctype:
            if ctype in PICKLE_TYPES or "pickle" in ctype:
                await _error(
                    415,
                    "unsupported_media_type",
                    "pickled payloads are never accepted: send JSON arguments",
                )(scope, receive, send)
                return
            if ctype != "application/json" and not ctype.endswith("+json"):
                await _error(
                    415,
                    "unsupported_media_type",
                    f"content type {ctype!r} is not supported: send application/json",
                )(scope, receive, send)
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _error(
                413,
                "payload_too_large",
                f"request body of {length} bytes is over the {self.max_bytes} limit",
            )(scope, receive, send)
            return
        seen = 0
        too_large = False

        async def counted() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    raise _TooLarge
            return message

        async def watch(message: Message) -> None:
            if not too_large:  # the app's answer to a cut-off body is replaced below
                await send(message)

        with suppress(_TooLarge):
            await self.app(scope, counted, watch)
        if too_large:
            await _error(
                413, "payload_too_large", f"request body is over the {self.max_bytes} byte limit"
            )(scope, receive, send)


class _TooLarge(Exception):
    pass


ERRORS = {"model": ErrorBody}
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: ERRORS,
    401: ERRORS,
    404: ERRORS,
    413: ERRORS,
    415: ERRORS,
    422: ERRORS,
    429: ERRORS,
}


def create_app(state: ServerState) -> FastAPI:
    """The FastAPI app over a started :class:`ServerState`."""
    app = FastAPI(title="oomguard", version="1", responses=RESPONSES)
    app.state.oomguard = state

    @app.exception_handler(BackpressureError)
    async def _backpressure(request: Request, err: BackpressureError) -> JSONResponse:
        code = str(getattr(err, "code", "queue_full"))
        state.metrics.rejected.labels(code).inc()
        if code == "payload_too_large":
            return _error(413, code, err.message)
        retry = getattr(err, "retry_after", None) or 1.0
        return _error(429, code, err.message, headers={"Retry-After": str(max(1, round(retry)))})

    @app.exception_handler(JobNotFoundError)
    async def _not_found(request: Request, err: JobNotFoundError) -> JSONResponse:
        return _error(404, "job_not_found", err.message)

    @app.exception_handler(TaskReferenceError)
    async def _bad_task(request: Request, err: TaskReferenceError) -> JSONResponse:
        return _error(422, "task_not_allowed", err.message)

    @app.exception_handler(OomguardError)
    async def _oomguard(request: Request, err: OomguardError) -> JSONResponse:
        code = "invalid_payload" if isinstance(err, PayloadError) else "invalid_request"
        return _error(422, code, err.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in err.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return _error(400, "malformed_json", "the request body is not valid JSON", errors)
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return _error(422, "invalid_request", f"{where}: {first['msg']}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(
            err.status_code,
            codes.get(err.status_code, "http_error"),
            str(err.detail),
            headers=dict(err.headers) if err.headers else None,
        )

    @app.post("/v1/jobs", status_code=201, response_model=SubmitResponse)
    def submit(body: SubmitRequest) -> SubmitResponse:
        """Submit one task or a batch (accepted whole or refused whole)."""
        return state.submit(body)

    @app.get("/v1/jobs", response_model=JobList)
    def list_jobs(limit: int = Query(20, ge=1, le=1000)) -> JobList:
        """The newest jobs first."""
        rows = (
            state.stores.get()
            .db.execute(
                "SELECT id, name, namespace, fn, state, created_at FROM jobs "
                "ORDER BY created_at DESC LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return JobList(
            jobs=[
                JobSummary(
                    job_id=r[0], name=r[1], namespace=r[2], fn=r[3], state=r[4], created_at=r[5]
                )
                for r in rows
            ]
        )

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus)
    def get_job(job_id: str) -> JobStatus:
        store = state.stores.get()
        return JobStatus(**job_status(store, _resolve(store, job_id)))

    @app.get("/v1/jobs/{job_id}/tasks", response_model=TaskList)
    def get_tasks(
        job_id: str,
        state_: str | None = Query(None, alias="state", pattern=r"^[a-z]{1,20}$"),
        class_: str | None = Query(None, alias="class", pattern=r"^[a-z_]{1,40}$"),
        limit: int = Query(100, ge=1, le=10_000),
    ) -> TaskList:
        """The job's tasks, filtered by state and failure class."""
        store = state.stores.get()
        job_id = _resolve(store, job_id)
        sql = (
            "SELECT id, grp, kind, replicate, fn, state, attempts, failure_class, error, "
            "params FROM tasks WHERE job_id = ?"
        )
        args: list[Any] = [job_id]
        if state_ is not None:
            sql += " AND state = ?"
            args.append(state_)
        if class_ is not None:
            sql += " AND failure_class = ?"
            args.append(class_)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        tasks = []
        for tid, grp, kind, rep, fn, st, att, fc, error, params in store.db.execute(sql, args):
            tasks.append(
                TaskInfo(
                    task_id=tid,
                    group=grp,
                    kind=kind,
                    replicate=rep,
                    fn=fn,
                    state=st,
                    attempts=att,
                    failure_class=fc,
                    error=error,
                    params=json.loads(params) if params else None,
                )
            )
        return TaskList(job_id=job_id, tasks=tasks)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=CancelResponse)
    def cancel(job_id: str) -> CancelResponse:
        store = state.stores.get()
        job_id = _resolve(store, job_id)
        return CancelResponse(job_id=job_id, cancelled=store.cancel(job_id))

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics."""
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        pressure = state.backpressure.pressure
        return Health(
            status="ok" if state.runner.alive else "scheduler_stopped",
            scheduler_alive=state.runner.alive,
            pending_tasks=state.backpressure.pending.total(),
            memory_pressure=bool(pressure and pressure.active),
        )

    @app.get("/v1/debug/heap", response_model=HeapReport)
    def heap(limit: int = Query(25, ge=1, le=500)) -> HeapReport:
        """Top allocation sites (tracemalloc); 404 unless the server runs --heap-profiling."""
        if not state.settings.heap_profiling or not tracemalloc.is_tracing():
            raise StarletteHTTPException(404, "heap profiling is off: serve --heap-profiling")
        snapshot = tracemalloc.take_snapshot()
        stats = snapshot.statistics("lineno")[:limit]
        current, peak = tracemalloc.get_traced_memory()
        top = [
            HeapSite(
                site=f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
                size_bytes=s.size,
                count=s.count,
            )
            for s in stats
        ]
        return HeapReport(
            traced_current_bytes=current,
            traced_peak_bytes=peak,
            rss_bytes=state.scheduler_rss(),
            top=top,
        )

    app.add_middleware(
        _Guard, token=state.settings.token, max_bytes=state.settings.max_request_bytes
    )
    return app


def _resolve(store: SqliteStore, job_id: str) -> str:
    if not job_id or len(job_id) > 64:
        raise JobNotFoundError(f"no job {job_id[:64]!r}", job_id=job_id[:64])
    # The prefix lookup uses LIKE: a job id never holds wildcards.
    if any(c in job_id for c in "%_"):
        raise JobNotFoundError(f"no job {job_id!r}", job_id=job_id)
    return store.resolve_job(job_id)


@contextmanager
def serving_state(settings: ServerSettings) -> Iterator[ServerState]:
    """A started ServerState, closed on exit (for tests and the CLI)."""
    state = ServerState(settings)
    state.start()
    try:
        yield state
    finally:
        state.close()


def read_token(path: str | os.PathLike[str]) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as err:
        raise ConfigError(f"cannot read token file {str(path)!r}: {err.strerror or err}") from err
    if len(token) < 16:
        raise ConfigError(f"token file {str(path)!r} holds less than 16 characters")
    return token


__all__ = [
    "ServerSettings",
    "ServerState",
    "container_memory_limit",
    "create_app",
    "read_token",
    "resolve_scheduler_memory_limit",
    "serving_state",
]
