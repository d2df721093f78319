"""The searched lists, failures and jobs: the filters a URL's query holds (task, state,
failure class, namespace, error text, time range, the page's cursor), read into a
:class:`~oomguard.store.dashboard.FailureQuery` or
:class:`~oomguard.store.dashboard.JobQuery`, and the page they give, newest first, with
the link to the next (older) page. Every filter is in the URL, so a search is a bookmark.

Reads only (``store.dashboard``). See docs/ARCHITECTURE.md ("The dashboard").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlencode

from oomguard.jobs.model import FailureClass
from oomguard.store.dashboard import FailureQuery, FailureRow, JobQuery, JobRow
from oomguard.store.protocol import Store

#: failed tasks on one page
PAGE_SIZE = 50
#: the longest text a filter keeps (a longer one is cut)
MAX_TEXT = 200
#: the query parameters of a search, in the order its URL lists them
FIELDS = ("task", "failure_class", "namespace", "error", "since", "until")
#: those of the jobs list
JOB_FIELDS = ("task", "state", "failure_class", "namespace", "error", "since", "until")
#: a job's states as users see them
JOB_STATES = ("running", "waiting", "succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class FailuresPage:
    """What the failures page shows."""

    query: FailureQuery
    #: the filters as given (the form shows them back)
    form: Mapping[str, str]
    failures: list[FailureRow]
    #: the URL of the next (older) page (None: this is the last)
    older: str | None
    #: the URL of the first page of this search (None: this is the first)
    newest: str | None
    #: what in the query was not understood (and so not applied)
    problems: list[str]
    classes: list[str]


_BAD_CURSOR = "the page link is not one this dashboard made: from the newest"


def _time(text: str) -> float:
    """``2026-12-07``, ``2026-12-07T17:30`` (a form's ``datetime-local``) or with seconds,
    in UTC: epoch seconds."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass(frozen=True)
class _Filters:
    """What both lists are filtered by, read from a URL's query."""

    form: dict[str, str]
    problems: list[str]
    failure_class: str | None
    since: float | None
    until: float | None

    def text(self, name: str) -> str | None:
        return self.form.get(name) or None


def _filters(params: Mapping[str, str], fields: tuple[str, ...]) -> _Filters:
    form = {name: params.get(name, "").strip()[:MAX_TEXT] for name in fields}
    problems: list[str] = []
    classes = {c.value for c in FailureClass}
    failure_class = form["failure_class"] or None
    if failure_class is not None and failure_class not in classes:
        problems.append(f"{failure_class!r} is not a failure class")
        failure_class = None
    times: dict[str, float | None] = {}
    for name in ("since", "until"):
        times[name] = None
        if form[name]:
            try:
                times[name] = _time(form[name])
            except ValueError:
                problems.append(f"{name}: {form[name]!r} is not a date (YYYY-MM-DD[THH:MM])")
    return _Filters(form, problems, failure_class, times["since"], times["until"])


def read_query(params: Mapping[str, str]) -> tuple[FailureQuery, dict[str, str], list[str]]:
    """The failures search in a URL's query parameters: the query, the filters as given,
    and what was not understood (left out of the query, said on the page)."""
    f = _filters(params, FIELDS)
    before: tuple[float, int] | None = None
    cursor = params.get("before", "")
    if cursor:
        ts, _, task_id = cursor.partition(":")
        try:
            before = (float(ts), int(task_id))
        except ValueError:
            f.problems.append(_BAD_CURSOR)
    query = FailureQuery(
        task=f.text("task"),
        failure_class=f.failure_class,
        namespace=f.text("namespace"),
        error=f.text("error"),
        since=f.since,
        until=f.until,
        before=before,
    )
    return query, f.form, f.problems


def read_job_query(params: Mapping[str, str]) -> tuple[JobQuery, dict[str, str], list[str]]:
    """The jobs search in a URL's query parameters, as :func:`read_query` reads the
    failures search, with the state."""
    f = _filters(params, JOB_FIELDS)
    state = f.text("state")
    if state is not None and state not in JOB_STATES:
        f.problems.append(f"{state!r} is not a job state ({', '.join(JOB_STATES)})")
        state = None
    before: tuple[float, str] | None = None
    cursor = params.get("before", "")
    if cursor:
        ts, _, job_id = cursor.partition(":")
        try:
            before = (float(ts), job_id)
        except ValueError:
            f.problems.append(_BAD_CURSOR)
    query = JobQuery(
        task=f.text("task"),
        state=state,
        failure_class=f.failure_class,
        namespace=f.text("namespace"),
        error=f.text("error"),
        since=f.since,
        until=f.until,
        before=before,
    )
    return query, f.form, f.problems


@dataclass(frozen=True)
class JobsPage:
    """What the searched jobs list shows: each job with its status (counts, failures by
    class, as the store's ``job_status`` gives them)."""

    query: JobQuery
    form: Mapping[str, str]
    jobs: list[tuple[JobRow, object]]
    older: str | None
    newest: str | None
    problems: list[str]
    classes: list[str]
    states: tuple[str, ...]


def jobs_page(
    store: Store,
    params: Mapping[str, str],
    namespaces: Collection[str] | None,
    page_size: int = PAGE_SIZE,
) -> JobsPage:
    """A page of the jobs of ``namespaces`` (None: of all) that ``params`` search for."""
    query, form, problems = read_job_query(params)
    rows = store.dashboard.jobs(query, namespaces, page_size + 1)
    shown = rows[:page_size]
    kept = {name: value for name, value in form.items() if value}
    older = None
    if len(rows) > page_size:
        last = shown[-1]
        older = "/ui/jobs?" + urlencode({**kept, "before": f"{last.created_at!r}:{last.job_id}"})
    newest = None
    if query.before is not None:
        newest = "/ui/jobs" + ("?" + urlencode(kept) if kept else "")
    return JobsPage(
        query=query,
        form=form,
        jobs=[(row, store.queries.job_status(row.job_id)) for row in shown],
        older=older,
        newest=newest,
        problems=problems,
        classes=sorted(c.value for c in FailureClass),
        states=JOB_STATES,
    )


def failures_page(
    store: Store,
    params: Mapping[str, str],
    namespaces: Collection[str] | None,
    page_size: int = PAGE_SIZE,
) -> FailuresPage:
    """A page of the failures of ``namespaces`` (None: of all) that ``params`` search for."""
    query, form, problems = read_query(params)
    # One more row than shown says whether an older page exists.
    rows = store.dashboard.failures(query, namespaces, page_size + 1)
    shown = rows[:page_size]
    kept = {name: value for name, value in form.items() if value}
    older = None
    if len(rows) > page_size:
        last = shown[-1]
        cursor = f"{last.ended_at!r}:{last.task_id}"
        older = "/ui/failures?" + urlencode({**kept, "before": cursor})
    newest = None
    if query.before is not None:
        newest = "/ui/failures" + ("?" + urlencode(kept) if kept else "")
    return FailuresPage(
        query=query,
        form=form,
        failures=shown,
        older=older,
        newest=newest,
        problems=problems,
        classes=sorted(c.value for c in FailureClass),
    )


__all__ = [
    "FIELDS",
    "JOB_FIELDS",
    "JOB_STATES",
    "PAGE_SIZE",
    "FailuresPage",
    "JobsPage",
    "failures_page",
    "jobs_page",
    "read_job_query",
    "read_query",
]
