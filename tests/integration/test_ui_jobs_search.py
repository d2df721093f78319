"""The searched jobs list over a store real workers wrote (served by the read-only app of
`oomguard ui`): by task or name, state as users see it, a failed task's class or error
text, namespace and creation time; paged newest first by links that keep the search."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

import oomguard
from fixtures.ui_process import Dashboard, dashboard
from oomguard.store.factory import open_store
from oomguard.ui.search import jobs_page

ROW = re.compile(r'<tr class="found-job" data-job="([^"]+)" data-state="(\w+)">')


def _found(ui: Dashboard, **params: str) -> tuple[list[tuple[str, str]], str]:
    page = ui.get("/ui/jobs" + ("?" + urlencode(params) if params else ""))
    assert page.status_code == 200, page.text
    return ROW.findall(page.text), page.text


def test_jobs_searched_by_task_state_class_error_namespace_and_time(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    started = time.time()
    with oomguard.Runner(store=str(path), workers=2, isolation="watchdog") as runner:
        ok = [
            runner.sweep("oomguard.examples:noop", [{"x": i}], name=f"fine-{i}", namespace="alpha")
            for i in range(3)
        ]
        bad = runner.sweep(
            "oomguard.examples:fail",
            [{"message": "the <disk> is full"}],
            name="broken",
            namespace="beta",
        )
        for job in [*ok, bad]:
            job.wait(timeout=120, progress=False)
    with dashboard(path, tmp_path) as ui:
        everything, html = _found(ui)
        assert [j for j, _ in everything] == [bad.id, *(j.id for j in reversed(ok))]
        assert 'aria-label="search the jobs"' in html
        assert _found(ui, state="failed")[0] == [(bad.id, "failed")]
        assert {j for j, _ in _found(ui, state="succeeded")[0]} == {j.id for j in ok}
        assert _found(ui, state="running")[0] == []
        assert _found(ui, task="EXAMPLES:FAIL")[0] == [(bad.id, "failed")]
        assert len(_found(ui, task="fine-")[0]) == 3  # by name too
        assert _found(ui, failure_class="error")[0] == [(bad.id, "failed")]
        assert _found(ui, failure_class="oom_cgroup")[0] == []
        found, html = _found(ui, error="<DISK>")
        assert found == [(bad.id, "failed")] and "&lt;DISK&gt;" in html
        assert len(_found(ui, namespace="alpha")[0]) == 3
        day = datetime.fromtimestamp(started, tz=timezone.utc).strftime("%Y-%m-%d")
        assert len(_found(ui, since=day)[0]) == 4 and _found(ui, until=day)[0] == []
        found, html = _found(ui, state="sleeping")
        assert len(found) == 4 and "&#39;sleeping&#39; is not a job state" in html

    with open_store(str(path), readonly=True) as store:
        first = jobs_page(store, {"namespace": "alpha"}, None, page_size=2)
        assert [row.job_id for row, _ in first.jobs] == [ok[2].id, ok[1].id]
        assert first.older is not None and "namespace=alpha" in first.older
        cursor = first.older.split("before=")[1].replace("%3A", ":")
        second = jobs_page(store, {"namespace": "alpha", "before": cursor}, None, page_size=2)
        assert [row.job_id for row, _ in second.jobs] == [ok[0].id] and second.older is None
        assert second.newest == "/ui/jobs?namespace=alpha"
        assert jobs_page(store, {}, ["beta"]).jobs[0][0].job_id == bad.id  # namespaces kept
        assert len(jobs_page(store, {}, ["beta"]).jobs) == 1
