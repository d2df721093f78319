"""How routes check their caller: its grant, its role, its namespaces, its query parameters.

The guard (:mod:`~oomguard.api.guard`) puts the caller's
:class:`~oomguard.api.tenancy.Grant` in the request's state; routes read it with
:func:`grant_of`, refuse a role too low with :func:`require` (403 ``forbidden``), and look
jobs up with :func:`visible_job`, which answers a job of a namespace the caller does not
reach exactly as a job that does not exist (404). :func:`no_unknown_params`, a dependency
of every route, answers 422 to a query parameter the route does not take: a misspelt
filter (``?namspace=``) would otherwise be ignored and answer more than was asked.
See docs/ARCHITECTURE.md ("Tenancy").
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from oomguard.api.tenancy import ANONYMOUS, Grant, Role
from oomguard.errors import AccessDeniedError, JobNotFoundError
from oomguard.store.protocol import Store


def grant_of(request: Request) -> Grant:
    """The caller of ``request`` (as the guard found it)."""
    grant = getattr(request.state, "grant", None)
    # A route behind the guard always has one; an app without the guard is open.
    return grant if isinstance(grant, Grant) else ANONYMOUS


def require(grant: Grant, role: Role, what: str) -> None:
    """Raise :class:`AccessDeniedError` (403) unless ``grant`` has ``role`` or above."""
    if not grant.may(role):
        raise AccessDeniedError(
            f"{what} needs the {role.name.lower()} role; token {grant.label!r} has "
            f"{grant.role.name.lower()}",
            label=grant.label,
        )


def visible_job(store: Store, grant: Grant, job_id: str) -> str:
    """The job ``job_id`` (a whole id) if ``grant`` reaches its namespace; else
    :class:`JobNotFoundError`, worded as for a job that does not exist."""
    # Whole ids only: a prefix would let a guess of one character reach some job.
    if not job_id or len(job_id) > 64:
        raise JobNotFoundError(f"no job {job_id[:64]!r}", job_id=job_id[:64])
    found = store.resolve_job(job_id, whole=True)
    if grant.namespaces is not None:
        namespace = store.queries.job_namespace(found)
        if namespace is None or not grant.sees(namespace):
            raise JobNotFoundError(f"no job {job_id!r}", job_id=job_id)
    return found


def audit(request: Request, **fields: object) -> None:
    """Add ``fields`` to the request's audit line (see :mod:`~oomguard.api.guard`)."""
    line = getattr(request.state, "audit", None)
    if line is None:
        line = {}
        request.state.audit = line
    line.update(fields)


def no_unknown_params(request: Request) -> None:
    """422 ``invalid_request`` for a query parameter the route does not declare."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = {p.alias for p in route.dependant.query_params}
    unknown = sorted({k for k in request.query_params if k not in known})
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        allowed = ", ".join(sorted(known)) or "none"
        raise RequestValidationError(
            [
                {
                    "type": "unknown_parameter",
                    "loc": ("query", unknown[0][:40]),
                    "msg": f"unknown query parameter(s) {shown} (this route takes: {allowed})",
                    "input": None,
                }
            ]
        )


__all__ = ["audit", "grant_of", "no_unknown_params", "require", "visible_job"]
