"""The dashboard's routes (``/ui/``): in ``oomguard serve`` beside the API, or alone over a
store opened read-only (``oomguard ui --store``).

Pages are HTML rendered on the server (Jinja2, autoescaped) with inline SVG charts: they
are whole without JavaScript. ``static/live.js`` refreshes a page in place every few
seconds while its job runs. Access is the API's: :class:`~oomguard.api.guard.Guard` checks
Host and Origin, and the token (or the session cookie of a login, for these pages only:
:mod:`~oomguard.ui.session`); a caller sees the jobs of its namespaces only, and another
namespace's job or task is missing (404). See docs/ARCHITECTURE.md ("The dashboard").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import resources
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from oomguard.api.access import grant_of, visible_job
from oomguard.api.guard import UI_COOKIE, UI_LOGIN, UI_LOGOUT, Guard, session_id
from oomguard.api.tenancy import Tenancy
from oomguard.errors import JobNotFoundError
from oomguard.jobs.command import display
from oomguard.store.factory import open_store
from oomguard.store.per_thread import ThreadStores
from oomguard.store.protocol import Store
from oomguard.ui import actions, pages, search, task_page, work
from oomguard.ui.charts import format_duration
from oomguard.ui.session import LoginThrottle, Sessions
from oomguard.units import format_size

#: headers of every page: nothing from elsewhere, never framed, never cached
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with a
    # form's POST, which the guard refuses (the login and the actions need the real one).
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC = {"style.css": "text/css; charset=utf-8", "live.js": "text/javascript; charset=utf-8"}
#: what a page shows for a value it does not have (an en dash)
NONE = "\u2013"
#: the largest body the standalone dashboard reads (only the login form has one)
MAX_BODY = 16 * 1024


class ReadOnlyStores(ThreadStores):
    """One read-only :class:`Store` per thread (a connection is per thread)."""

    def __init__(self, path: str) -> None:
        open_store(path, readonly=True).close()  # a path that is not a store fails here
        super().__init__(path, readonly=True)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("oomguard.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = lambda n: NONE if n is None else format_size(int(n))
    env.filters["when"] = _when
    env.filters["duration"] = lambda s: NONE if s is None else format_duration(s)
    env.filters["svg"] = Markup  # charts are built escaped (ui/charts.py)
    env.filters["task"] = display  # a command task by its command line, not its JSON
    env.globals["memory_classes"] = actions.MEMORY_CLASSES
    env.globals["raise_link"] = actions.raise_link
    return env


def _when(ts: float | None) -> str:
    if ts is None:
        return NONE
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def add_ui(
    app: FastAPI,
    stores: Callable[[], Store],
    tenancy: Tenancy,
    sessions: Sessions,
    *,
    read_only: bool = False,
    throttle: LoginThrottle | None = None,
) -> None:
    """Add the dashboard's routes to ``app``; ``stores()`` gives this thread's store,
    ``tenancy`` the tokens its login form takes, ``sessions`` the logins (the same object
    the app's guard reads)."""
    env = _environment()
    throttle = throttle if throttle is not None else LoginThrottle()
    login = not tenancy.open

    def page(name: str, http_status: int = 200, /, **context: object) -> HTMLResponse:
        html = env.get_template(name).render(
            read_only=read_only, login=login, login_page=name == "login.html", **context
        )
        return HTMLResponse(html, status_code=http_status, headers=PAGE_HEADERS)

    if not read_only:  # a dashboard over a read-only store offers no action
        actions.add_actions(app, stores, page, actions.Csrf())

    @app.get("/ui", include_in_schema=False)
    def ui_root() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    @app.get("/ui/", include_in_schema=False)
    def ui_jobs(request: Request) -> Response:
        grant = grant_of(request)
        return page("jobs.html", **pages.jobs_page(stores(), namespaces=grant.namespaces))

    @app.get("/ui/jobs/{job_id}", include_in_schema=False)
    def ui_job(request: Request, job_id: str) -> Response:
        store = stores()
        try:
            data = pages.job_page(store, visible_job(store, grant_of(request), job_id))
        except JobNotFoundError:
            return page("missing.html", 404, what=f"job {job_id[:64]}")
        return page("job.html", **data)

    @app.get("/ui/failures", include_in_schema=False)
    def ui_failures(
        request: Request,
        task: str = "",
        failure_class: str = "",
        namespace: str = "",
        error: str = "",
        since: str = "",
        until: str = "",
        before: str = "",
    ) -> Response:
        # Declared one by one: the API refuses a query parameter its route does not take.
        params = {
            "task": task,
            "failure_class": failure_class,
            "namespace": namespace,
            "error": error,
            "since": since,
            "until": until,
            "before": before,
        }
        view = search.failures_page(stores(), params, grant_of(request).namespaces)
        return page("failures.html", view=view)

    @app.get("/ui/jobs", include_in_schema=False)
    def ui_jobs_search(
        request: Request,
        task: str = "",
        state: str = "",
        failure_class: str = "",
        namespace: str = "",
        error: str = "",
        since: str = "",
        until: str = "",
        before: str = "",
    ) -> Response:
        # Declared one by one: the API refuses a query parameter its route does not take.
        params = {
            "task": task,
            "state": state,
            "failure_class": failure_class,
            "namespace": namespace,
            "error": error,
            "since": since,
            "until": until,
            "before": before,
        }
        view = search.jobs_page(stores(), params, grant_of(request).namespaces)
        return page("jobs_search.html", view=view)

    @app.get("/ui/work", include_in_schema=False)
    def ui_work(request: Request) -> Response:
        return page("work.html", view=work.work_page(stores(), grant_of(request).namespaces))

    @app.get("/ui/tasks/{task_id}", include_in_schema=False)
    def ui_task(request: Request, task_id: int) -> Response:
        store = stores()
        grant = grant_of(request)
        place = store.task_place(task_id)
        data = None
        if place is not None:
            namespace = store.queries.job_namespace(place[0])
            if namespace is not None and grant.sees(namespace):
                data = task_page.task_page(store, task_id)
        if data is None:
            return page("missing.html", 404, what=f"task {task_id}")
        return page("task.html", 200, **data)

    @app.get("/ui/static/{name}", include_in_schema=False)
    def ui_static(name: str) -> Response:
        if name not in STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        body = (resources.files("oomguard.ui") / "static" / name).read_bytes()
        return Response(
            body,
            media_type=STATIC[name],
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        )

    @app.get(UI_LOGIN, include_in_schema=False)
    def ui_login_form() -> Response:
        if not login:
            return RedirectResponse("/ui/", status_code=303)
        return page("login.html")

    @app.post(UI_LOGIN, include_in_schema=False)
    async def ui_login(request: Request) -> Response:
        if not login:
            return RedirectResponse("/ui/", status_code=303)
        client = request.client.host if request.client else "-"
        wait = throttle.wait(client)
        if wait > 0:
            return _too_soon(page, wait)
        body = (await request.body()).decode("utf-8", "replace")
        try:
            given = parse_qs(body, max_num_fields=4).get("token", [""])[0].strip()
        except ValueError:  # more fields than the form has
            return page("login.html", 400, error="that is not the login form")
        grant = tenancy.identify(given)
        if grant is None:
            wait = throttle.failed(client)
            if wait > 0:
                return _too_soon(page, wait)
            return page("login.html", 401, error="that is not a token of this server")
        throttle.succeeded(client)
        request.state.grant = grant  # the audit line names who logged in
        answer = RedirectResponse("/ui/", status_code=303)
        answer.set_cookie(
            UI_COOKIE,
            sessions.start(grant),
            max_age=int(sessions.ttl),
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return answer

    @app.post(UI_LOGOUT, include_in_schema=False)
    def ui_logout(request: Request) -> Response:
        sid = session_id({"cookie": request.headers.get("cookie", "")})
        if sid is not None:
            grant = sessions.grant(sid)
            if grant is not None:
                request.state.grant = grant
            sessions.end(sid)
        answer = RedirectResponse(UI_LOGIN if login else "/ui/", status_code=303)
        answer.delete_cookie(UI_COOKIE, path="/ui", httponly=True, samesite="strict")
        return answer


def _too_soon(page: Callable[..., HTMLResponse], wait: float) -> HTMLResponse:
    seconds = max(1, math.ceil(wait))
    answer = page("login.html", 429, error=f"too many failed logins: try again in {seconds} s")
    answer.headers["Retry-After"] = str(seconds)
    return answer


def create_ui_app(
    store_path: str,
    *,
    allowed_hosts: tuple[str, ...] | None,
    tenancy: Tenancy | None = None,
    sessions: Sessions | None = None,
) -> tuple[FastAPI, ReadOnlyStores]:
    """The dashboard alone, over the store at ``store_path`` opened read-only
    (``oomguard ui``): the same pages and the same guard as in ``oomguard serve``."""
    tenancy = tenancy if tenancy is not None else Tenancy.single(None)
    sessions = sessions if sessions is not None else Sessions()
    stores = ReadOnlyStores(store_path)
    app = FastAPI(title="oomguard dashboard", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    add_ui(app, stores.get, tenancy, sessions, read_only=True)
    app.add_middleware(
        Guard,
        tenancy=tenancy,
        max_bytes=MAX_BODY,
        allowed_hosts=allowed_hosts,
        sessions=sessions,
    )
    return app, stores


__all__ = ["PAGE_HEADERS", "ReadOnlyStores", "add_ui", "create_ui_app"]
