"""The failures list searched: the filters a URL's query holds (task, failure class,
namespace, error text, time range, the page's cursor), read into a
:class:`~oomguard.store.dashboard.FailureQuery`, and the page they give, newest first, with
the link to the next (older) page. Every filter is in the URL, so a search is a bookmark.

Reads only (``store.dashboard``). See docs/ARCHITECTURE.md ("The dashboard").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlencode

from oomguard.jobs.model import FailureClass
from oomguard.store.dashboard import FailedTask, FailureQuery
from oomguard.store.protocol import Store

#: failed tasks on one page
PAGE_SIZE = 50
#: the longest text a filter keeps (a longer one is cut)
MAX_TEXT = 200
#: the query parameters of a search, in the order its URL lists them
FIELDS = ("task", "failure_class", "namespace", "error", "since", "until")


@dataclass(frozen=True)
class FailuresPage:
    """What the failures page shows."""

    query: FailureQuery
    #: the filters as given (the form shows them back)
    form: Mapping[str, str]
    failures: list[FailedTask]
    #: the URL of the next (older) page (None: this is the last)
    older: str | None
    #: the URL of the first page of this search (None: this is the first)
    newest: str | None
    #: what in the query was not understood (and so not applied)
    problems: list[str]
    classes: list[str]


def _time(text: str) -> float:
    """``2026-12-07``, ``2026-12-07T17:30`` (a form's ``datetime-local``) or with seconds,
    in UTC: epoch seconds."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def read_query(params: Mapping[str, str]) -> tuple[FailureQuery, dict[str, str], list[str]]:
    """The search in a URL's query parameters: the query, the filters as given, and what
    was not understood (left out of the query, said on the page)."""
    form = {name: params.get(name, "").strip()[:MAX_TEXT] for name in FIELDS}
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
    before: tuple[float, int] | None = None
    cursor = params.get("before", "")
    if cursor:
        ts, _, task_id = cursor.partition(":")
        try:
            before = (float(ts), int(task_id))
        except ValueError:
            problems.append("the page link is not one this dashboard made: from the newest")
    query = FailureQuery(
        task=form["task"] or None,
        failure_class=failure_class,
        namespace=form["namespace"] or None,
        error=form["error"] or None,
        since=times["since"],
        until=times["until"],
        before=before,
    )
    return query, form, problems


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


__all__ = ["FIELDS", "PAGE_SIZE", "FailuresPage", "failures_page", "read_query"]
