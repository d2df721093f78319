"""oomguard's errors as HTTP answers: one JSON shape, ``{"error": {code, message, details}}``.

Errors are translated here, at the boundary; routes and the service raise oomguard's own
errors (:mod:`oomguard.errors`). The status codes and ``code`` strings are part of the API.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from oomguard.api.intake import shown_errors
from oomguard.api.metrics import ServerMetrics
from oomguard.api.schemas import ErrorBody
from oomguard.errors import (
    AccessDeniedError,
    BackpressureError,
    JobActiveError,
    JobNotFoundError,
    OomguardError,
    PayloadError,
    TaskReferenceError,
)

ERRORS: dict[str, object] = {"model": ErrorBody}
#: the error answers every route may give, as shown in the OpenAPI schema
RESPONSES: dict[int | str, dict[str, object]] = {
    400: ERRORS,
    401: ERRORS,
    403: ERRORS,
    404: ERRORS,
    409: ERRORS,
    413: ERRORS,
    415: ERRORS,
    422: ERRORS,
    429: ERRORS,
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: object = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON error body every refusal of the API has."""
    body: dict[str, dict[str, object]] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    """Answer oomguard's errors, validation errors and HTTP errors as :func:`error_response`."""

    @app.exception_handler(BackpressureError)
    async def _backpressure(request: Request, err: BackpressureError) -> JSONResponse:
        code = str(getattr(err, "code", "queue_full"))
        metrics.rejected.labels(code).inc()
        if code in ("payload_too_large", "batch_too_large"):
            return error_response(413, code, err.message)
        if code == "scheduler_stopped":
            return error_response(503, code, err.message)
        retry = getattr(err, "retry_after", None) or 1.0
        return error_response(
            429, code, err.message, headers={"Retry-After": str(max(1, round(retry)))}
        )

    @app.exception_handler(JobNotFoundError)
    async def _not_found(request: Request, err: JobNotFoundError) -> JSONResponse:
        return error_response(404, "job_not_found", err.message)

    @app.exception_handler(AccessDeniedError)
    async def _denied(request: Request, err: AccessDeniedError) -> JSONResponse:
        return error_response(403, "forbidden", err.message)

    @app.exception_handler(JobActiveError)
    async def _active(request: Request, err: JobActiveError) -> JSONResponse:
        return error_response(409, "job_active", err.message)

    @app.exception_handler(TaskReferenceError)
    async def _bad_task(request: Request, err: TaskReferenceError) -> JSONResponse:
        return error_response(422, "task_not_allowed", err.message)

    @app.exception_handler(OomguardError)
    async def _oomguard(request: Request, err: OomguardError) -> JSONResponse:
        code = "invalid_payload" if isinstance(err, PayloadError) else "invalid_request"
        return error_response(422, code, err.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        # Never echoed whole: a body can make millions of errors, and a field name is as
        # long as the body.
        found = err.errors()
        errors = shown_errors(found)
        more = " (more errors not shown)" if len(found) > len(errors) else ""
        if any(e["type"] == "json_invalid" for e in errors):
            return error_response(
                400, "malformed_json", "the request body is not valid JSON", errors
            )
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        loc = first["loc"]
        where = ".".join(str(p) for p in loc) if isinstance(loc, list | tuple) else ""
        return error_response(422, "invalid_request", f"{where}: {first['msg']}{more}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(
            err.status_code,
            codes.get(err.status_code, "http_error"),
            str(err.detail),
            headers=dict(err.headers) if err.headers else None,
        )


__all__ = ["RESPONSES", "add_error_handlers", "error_response"]
