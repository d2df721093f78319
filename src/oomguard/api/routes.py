"""The API's routes: jobs (``/v1/jobs``), ``/metrics``, ``/healthz`` and the heap report.

Route functions' names and docstrings are the OpenAPI schema's operation ids and
descriptions: renaming one changes the schema. Each route checks its caller
(:mod:`~oomguard.api.access`): reads need the ``read`` role, changes ``submit``, a forced
forget and the heap report ``admin``; a job outside the caller's namespaces is 404.
"""

from __future__ import annotations

import tracemalloc
from typing import Literal

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from oomguard.api.access import audit, grant_of, require, visible_job
from oomguard.api.listing import task_list
from oomguard.api.metrics import CONTENT_TYPE
from oomguard.api.schemas import (
    CancelResponse,
    ErrorBody,
    FailureList,
    ForgetResponse,
    Health,
    HeapReport,
    HeapSite,
    JobList,
    JobStatus,
    JobSummary,
    SubmitRequest,
    SubmitResponse,
    TaskList,
)
from oomguard.api.service import ServerState
from oomguard.api.submissions import submit as submit_job
from oomguard.api.tenancy import NAMESPACE, Role, visible
from oomguard.errors import AccessDeniedError
from oomguard.runner import job_failures, job_status

#: the most items a listing may ask for
MAX_LIMIT = 1000
#: the most failed tasks (with every attempt's evidence) one answer carries
MAX_FAILURES = 200
#: the body of ``POST /v1/jobs`` in the OpenAPI schema (the route reads it itself)
SUBMIT_BODY: dict[str, object] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SubmitRequest.model_json_schema()}},
    }
}


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add every route of the API to ``app``, served from ``state``."""

    @app.post(
        "/v1/jobs",
        status_code=201,
        response_model=SubmitResponse,
        responses={503: {"model": ErrorBody}},
        openapi_extra=SUBMIT_BODY,
    )
    async def submit(request: Request) -> SubmitResponse:
        """Submit one task or a batch (accepted whole or refused whole; 503
        ``scheduler_stopped`` once the scheduler loop died)."""
        grant = grant_of(request)
        require(grant, Role.SUBMIT, "submitting")
        # The body is read here (the guard bounds it) and parsed and validated on a worker
        # thread: a large one never holds up the event loop.
        body = await request.body()
        answer = await run_in_threadpool(submit_job, state, body, grant)
        audit(request, job_id=answer.job_id, namespace=answer.namespace, tasks=answer.tasks)
        return answer

    @app.get("/v1/jobs", response_model=JobList)
    def list_jobs(
        request: Request,
        limit: int = Query(20, ge=1, le=MAX_LIMIT),
        namespace: str | None = Query(None, pattern=NAMESPACE.pattern),
    ) -> JobList:
        """The newest jobs first, of the caller's namespaces (or of ``namespace``)."""
        grant = grant_of(request)
        require(grant, Role.READ, "listing jobs")
        shown = visible(grant, namespace)
        rows = state.stores.get().queries.recent_jobs(limit, namespaces=shown)
        return JobList(
            jobs=[
                JobSummary(
                    job_id=row.job_id,
                    name=row.name,
                    namespace=row.namespace,
                    fn=row.fn,
                    state=row.state,
                    created_at=row.created_at,
                )
                for row in rows
            ]
        )

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus)
    def get_job(request: Request, job_id: str) -> JobStatus:
        grant = grant_of(request)
        require(grant, Role.READ, "reading a job")
        store = state.stores.get()
        status = job_status(store, visible_job(store, grant, job_id))
        return JobStatus.model_validate(status.to_json())

    @app.get("/v1/jobs/{job_id}/failures", response_model=FailureList)
    def get_failures(
        request: Request, job_id: str, limit: int = Query(20, ge=1, le=MAX_FAILURES)
    ) -> FailureList:
        """The job's tasks that failed for good, in id order (at most ``limit``), each with
        its attempts and their evidence: what ``oomguard status --server`` tells."""
        grant = grant_of(request)
        require(grant, Role.READ, "reading a job's failures")
        store = state.stores.get()
        job_id = visible_job(store, grant, job_id)
        failures = job_failures(store, job_id, limit)
        return FailureList(job_id=job_id, failures=[f.to_json() for f in failures])

    @app.get("/v1/jobs/{job_id}/tasks", response_model=TaskList)
    def get_tasks(
        request: Request,
        job_id: str,
        state_: str | None = Query(None, alias="state", pattern=r"^[a-z]{1,20}$"),
        class_: str | None = Query(None, alias="class", pattern=r"^[a-z_]{1,40}$"),
        limit: int = Query(100, ge=1, le=MAX_LIMIT),
        after: int | None = Query(None, ge=0, le=2**62, description="tasks after this id"),
        params: Literal["none", "full"] = Query(
            "none", description="full: each task's arguments, where small enough to list"
        ),
    ) -> TaskList:
        """The job's tasks in id order, filtered by state and failure class; at most
        ``limit`` and about 4 MiB of JSON (then ``truncated``, with ``next_after``)."""
        grant = grant_of(request)
        require(grant, Role.READ, "reading a job's tasks")
        store = state.stores.get()
        job_id = visible_job(store, grant, job_id)
        rows = store.queries.task_list(
            job_id,
            state=state_,
            failure_class=class_,
            limit=limit,
            after=after,
            params=params == "full",
        )
        return task_list(job_id, rows, state.settings.max_response_bytes)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=CancelResponse)
    def cancel(request: Request, job_id: str) -> CancelResponse:
        grant = grant_of(request)
        require(grant, Role.SUBMIT, "cancelling a job")
        store = state.stores.get()
        job_id = visible_job(store, grant, job_id)
        cancelled = store.admin.cancel(job_id)
        audit(request, job_id=job_id, cancelled=cancelled)
        return CancelResponse(job_id=job_id, cancelled=cancelled)

    @app.delete("/v1/jobs/{job_id}", response_model=ForgetResponse)
    def forget(request: Request, job_id: str, force: bool = Query(False)) -> ForgetResponse:
        """Delete a finished job's rows (409 ``job_active`` while it has work in flight;
        ``force``, which drops results not yet in its Parquet output, needs admin)."""
        grant = grant_of(request)
        require(
            grant,
            Role.ADMIN if force else Role.SUBMIT,
            "forgetting a job" + (" with force" if force else ""),
        )
        store = state.stores.get()
        job_id = visible_job(store, grant, job_id)
        audit(request, job_id=job_id, force=force)
        return ForgetResponse(job_id=job_id, **store.admin.forget_job(job_id, force=force))

    @app.get("/metrics", response_class=Response)
    def metrics(request: Request) -> Response:
        """Prometheus metrics (of the caller's namespaces, where it does not reach all)."""
        grant = grant_of(request)
        require(grant, Role.READ, "reading metrics")
        return Response(state.metrics.render(grant.namespaces), media_type=CONTENT_TYPE)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    def healthz(response: Response) -> Health:
        """200 ``ok``; 503 ``scheduler_stopped`` once the scheduler loop died (the server
        then exits) or while the server stops."""
        pressure = state.backpressure.pressure
        stopped = state.scheduler_stopped
        if stopped:
            response.status_code = 503
        return Health(
            status="scheduler_stopped" if stopped else "ok",
            scheduler_alive=not stopped,
            pending_tasks=state.backpressure.pending.total(),
            memory_pressure=bool(pressure and pressure.active),
        )

    @app.get("/v1/debug/heap", response_model=HeapReport)
    def heap(request: Request, limit: int = Query(25, ge=1, le=500)) -> HeapReport:
        """Top allocation sites (tracemalloc); 404 unless the server runs --heap-profiling;
        for an admin of every namespace only."""
        grant = grant_of(request)
        if not grant.everything:
            raise AccessDeniedError(
                "the heap report is for an admin of every namespace", label=grant.label
            )
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


__all__ = ["add_routes"]
