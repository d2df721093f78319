"""The dashboard's actions: retry a job's failed tasks (all, by failure class, or chosen
ones), cancel a job, raise a memory key's memory and retry its tasks that ran out of it.

Each action is two routes under ``/ui/actions/``: a ``GET`` that changes nothing and shows
a confirmation page saying how many tasks the action touches, with a form, and a ``POST``
(that form) that does it. The guard (:mod:`~oomguard.api.guard`) takes the session cookie
on such a POST only with the server's own ``Origin``; here the form must also carry the
session's CSRF token (an HMAC of the session id under a key of this process, compared in
constant time), the caller must have the submit role, and the job must be in one of its
namespaces. The guard writes each POST to the audit log with what :func:`audit` adds.
The store does the work (``store.admin``), as ``oomguard retry`` and ``cancel`` do: a
scheduler of the store runs the retried tasks. See docs/guide/dashboard.md ("Actions").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from oomguard.api.access import audit, grant_of, require, visible_job
from oomguard.api.guard import session_id
from oomguard.api.tenancy import Role
from oomguard.errors import AccessDeniedError, InvalidSizeError, JobNotFoundError
from oomguard.jobs.model import FailureClass
from oomguard.store.admin import RetryChoice
from oomguard.store.protocol import Store
from oomguard.units import format_size, parse_size

#: the classes "raise memory and retry" takes: out of memory, in whatever way
MEMORY_CLASSES = (
    *sorted(str(c) for c in FailureClass if c.is_oom),
    str(FailureClass.NEEDS_MORE_MEMORY),
)
#: task ids one retry may name
MOST_IDS = 1000
#: fields an action's form has at most
MOST_FIELDS = 8


class Csrf:
    """Per-session CSRF tokens: an HMAC-SHA256 of the session id under a random key of
    this process (nothing stored; a restart ends the sessions and the tokens with them)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def token(self, request: Request) -> str:
        sid = session_id({"cookie": request.headers.get("cookie", "")})
        # A caller without a session (a bearer token, an open server) gets one by label:
        # a browser never adds a bearer token to another site's request.
        subject = f"session:{sid}" if sid else f"caller:{grant_of(request).label}"
        return hmac.new(self._key, subject.encode(), hashlib.sha256).hexdigest()

    def valid(self, request: Request, given: str) -> bool:
        return hmac.compare_digest(self.token(request).encode(), given.encode())


@dataclass(frozen=True)
class Action:
    """One confirmed action as its page shows it."""

    title: str
    what: str
    count: int
    path: str
    fields: tuple[tuple[str, str], ...]


class BadForm(ValueError):
    """A form or query that names no action this page can do."""


def _choice(failure_class: str, tasks: str) -> RetryChoice:
    classes = None
    if failure_class:
        try:
            classes = (str(FailureClass(failure_class)),)
        except ValueError:
            raise BadForm(f"no failure class {failure_class[:40]!r}") from None
    ids = None
    if tasks.strip():
        parts = [p for p in tasks.replace(" ", ",").split(",") if p]
        if len(parts) > MOST_IDS or not all(p.isdigit() and len(p) < 19 for p in parts):
            raise BadForm(f"tasks must be up to {MOST_IDS} task ids separated by commas")
        ids = tuple(int(p) for p in parts)
    return RetryChoice(classes=classes, task_ids=ids)


class NoMemory(BadForm):
    """The raise action was asked for without the memory to raise to: its page asks."""


def _raise_choice(memory_key: str, tasks: str, memory: str) -> RetryChoice:
    if len(memory_key) > 500:
        raise BadForm("that memory key is too long")
    ids = _choice("", tasks).task_ids
    if not memory_key and ids is None:
        raise BadForm("name the memory key (or the tasks) to give more memory")
    try:
        size = parse_size(memory) if memory.strip() else 0
    except InvalidSizeError as err:
        raise BadForm(str(err)) from None
    if size <= 0:
        raise NoMemory("give the memory to raise to (such as 2GiB)")
    return RetryChoice(
        classes=MEMORY_CLASSES, task_ids=ids, memory_key=memory_key or None, memory=size
    )


def _retry(store: Store, job_id: str, params: dict[str, str]) -> tuple[Action, RetryChoice]:
    choice = _choice(params.get("failure_class", ""), params.get("tasks", ""))
    said = []
    if choice.classes:
        said.append(f"of class {choice.classes[0]}")
    if choice.task_ids is not None:
        said.append(f"among the {len(choice.task_ids)} chosen")
    action = Action(
        title="Retry failed tasks",
        what=f"make the failed tasks {' '.join(said) or 'of any class'} of job {job_id} "
        "ready again with fresh retry counts",
        count=store.admin.count_chosen(job_id, choice),
        path=f"/ui/actions/jobs/{job_id}/retry",
        fields=(
            ("failure_class", params.get("failure_class", "")),
            ("tasks", params.get("tasks", "")),
        ),
    )
    return action, choice


def _raise(store: Store, job_id: str, params: dict[str, str]) -> tuple[Action, RetryChoice]:
    choice = _raise_choice(
        params.get("memory_key", ""), params.get("tasks", ""), params.get("memory", "")
    )
    which = f"of memory key {choice.memory_key} " if choice.memory_key else ""
    if choice.task_ids is not None:
        which += f"among the {len(choice.task_ids)} chosen "
    action = Action(
        title="Raise memory and retry",
        what=f"give the tasks {which}of job {job_id} that ran out of memory "
        f"({', '.join(MEMORY_CLASSES)}) at least {format_size(choice.memory or 0)} and make "
        "them ready again with fresh retry counts",
        count=store.admin.count_chosen(job_id, choice),
        path=f"/ui/actions/jobs/{job_id}/raise",
        fields=tuple((k, params.get(k, "")) for k in ("memory_key", "tasks", "memory")),
    )
    return action, choice


def _cancel(store: Store, job_id: str) -> Action:
    return Action(
        title="Cancel the job",
        what=f"cancel the unfinished tasks of job {job_id} (running attempts are stopped)",
        count=store.admin.count_open(job_id),
        path=f"/ui/actions/jobs/{job_id}/cancel",
        fields=(),
    )


def raise_link(job_id: str, task_ids: list[int]) -> str:
    """The page of "raise memory and retry" for some tasks of a job (it asks how much)."""
    return f"/ui/actions/jobs/{job_id}/raise?" + urlencode(
        {"tasks": ",".join(str(i) for i in task_ids[:MOST_IDS])}
    )


def add_actions(
    app: FastAPI,
    stores: Callable[[], Store],
    page: Callable[..., HTMLResponse],
    csrf: Csrf,
) -> None:
    """Add the action routes to ``app`` (not to a dashboard over a read-only store)."""

    def checked(request: Request, job_id: str, what: str) -> tuple[Store, str]:
        grant = grant_of(request)
        require(grant, Role.SUBMIT, what)
        store = stores()
        return store, visible_job(store, grant, job_id)

    def confirm(request: Request, job_id: str, kind: str, params: dict[str, str]) -> Response:
        try:
            store, job_id = checked(request, job_id, "acting on a job")
            if kind == "cancel":
                action = _cancel(store, job_id)
            else:
                action = (_retry if kind == "retry" else _raise)(store, job_id, params)[0]
        except AccessDeniedError as err:
            return page("confirm.html", 403, error=str(err), job_id=job_id[:64])
        except JobNotFoundError:
            return page("missing.html", 404, what=f"job {job_id[:64]}")
        except NoMemory:
            return page("confirm.html", ask=params, job_id=job_id)
        except BadForm as err:
            return page("confirm.html", 400, error=str(err), job_id=job_id[:64])
        return page("confirm.html", action=action, csrf=csrf.token(request), job_id=job_id)

    async def act(request: Request, job_id: str, kind: str) -> Response:
        body = (await request.body()).decode("utf-8", "replace")
        try:
            form = {k: v[0] for k, v in parse_qs(body, max_num_fields=MOST_FIELDS).items()}
        except ValueError:
            return page("confirm.html", 400, error="that is not an action's form", job_id="")
        if not csrf.valid(request, form.get("csrf", "")):
            audit(request, action=kind, refused="csrf")
            return page(
                "confirm.html",
                403,
                error="the form's CSRF token is missing or not this session's: "
                "open the action's page again",
                job_id=job_id[:64],
            )
        try:
            store, job_id = checked(request, job_id, "acting on a job")
            if kind == "cancel":
                n = store.admin.cancel(job_id)
                done = f"{n} task(s) cancelled"
            elif kind == "retry":
                choice = _retry(store, job_id, form)[1]
                if choice == RetryChoice():  # all of them: as `oomguard retry` does
                    n = store.admin.retry_failed(job_id)
                else:
                    n = store.admin.retry_chosen(job_id, choice)
                done = f"{n} task(s) ready to run again"
            else:
                choice = _raise(store, job_id, form)[1]
                n = store.admin.retry_chosen(job_id, choice)
                key = f" of key {choice.memory_key}" if choice.memory_key else ""
                done = (
                    f"{n} task(s){key} ready to run again with at least "
                    f"{format_size(choice.memory or 0)}"
                )
        except AccessDeniedError as err:
            audit(request, action=kind, refused="role")
            return page("confirm.html", 403, error=str(err), job_id=job_id[:64])
        except JobNotFoundError:
            audit(request, action=kind, refused="job")
            return page("missing.html", 404, what=f"job {job_id[:64]}")
        except BadForm as err:
            audit(request, action=kind, refused="form")
            return page("confirm.html", 400, error=str(err), job_id=job_id[:64])
        audit(request, action=kind, job_id=job_id, tasks=n)
        return page("confirm.html", done=done, job_id=job_id)

    @app.get("/ui/actions/jobs/{job_id}/retry", include_in_schema=False)
    def retry_page(
        request: Request, job_id: str, failure_class: str = "", tasks: str = ""
    ) -> Response:
        return confirm(request, job_id, "retry", {"failure_class": failure_class, "tasks": tasks})

    @app.post("/ui/actions/jobs/{job_id}/retry", include_in_schema=False)
    async def retry(request: Request, job_id: str) -> Response:
        return await act(request, job_id, "retry")

    @app.get("/ui/actions/jobs/{job_id}/raise", include_in_schema=False)
    def raise_page(
        request: Request, job_id: str, memory_key: str = "", tasks: str = "", memory: str = ""
    ) -> Response:
        params = {"memory_key": memory_key, "tasks": tasks, "memory": memory}
        return confirm(request, job_id, "raise", params)

    @app.post("/ui/actions/jobs/{job_id}/raise", include_in_schema=False)
    async def raise_memory(request: Request, job_id: str) -> Response:
        return await act(request, job_id, "raise")

    @app.get("/ui/actions/jobs/{job_id}/cancel", include_in_schema=False)
    def cancel_page(request: Request, job_id: str) -> Response:
        return confirm(request, job_id, "cancel", {})

    @app.post("/ui/actions/jobs/{job_id}/cancel", include_in_schema=False)
    async def cancel(request: Request, job_id: str) -> Response:
        return await act(request, job_id, "cancel")


__all__ = ["MEMORY_CLASSES", "Action", "Csrf", "add_actions", "raise_link"]
