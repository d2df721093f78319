"""The failures page over a store real workers wrote, served by the read-only app of
`oomguard ui`: searched by failure class, task, namespace, error text and time range, paged
newest first by links that keep the search (bookmarkable), and bad filters said on the page,
never applied."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import httpx

import oomguard
from fixtures.polling import wait_for
from fixtures.serve_process import serve
from fixtures.ui_process import Dashboard, dashboard

ROW = re.compile(r'<tr class="failure" data-task="(\d+)" data-class="(\w*)">')


def _rows(ui: Dashboard, **params: str) -> tuple[list[tuple[int, str]], str]:
    page = ui.get("/ui/failures" + ("?" + urlencode(params) if params else ""))
    assert page.status_code == 200, page.text
    return [(int(t), c) for t, c in ROW.findall(page.text)], page.text


def _older(html: str) -> str | None:
    found = re.search(r'<a rel="next" href="([^"]+)">', html)
    return found[1].replace("&amp;", "&") if found else None


def test_failures_searched_filtered_and_paged(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    started = time.time()
    with oomguard.Runner(
        store=str(path), workers=2, isolation="watchdog", worker_memory="96MiB", memory_key="mib"
    ) as runner:
        broken = runner.sweep(
            "oomguard.examples:fail",
            [{"message": f"broken <{i}> on purpose"} for i in range(55)],
            namespace="alpha",
        )
        big = runner.sweep(
            "oomguard.examples:allocate", [{"mib": 200, "hold": 0.5}], namespace="beta"
        )
        assert broken.wait(timeout=180, progress=False)["counts"]["failed"] == 55
        assert big.wait(timeout=180, progress=False)["counts"]["failed"] == 1
    with dashboard(path, tmp_path) as ui:
        first, html = _rows(ui)
        assert len(first) == 50 and 'aria-label="search the failures"' in html
        assert "broken &lt;" in html and "broken <" not in html
        older = _older(html)
        assert older is not None and older.startswith("/ui/failures?before=")
        rest = ui.get(older).text
        second = [(int(t), c) for t, c in ROW.findall(rest)]
        assert len(second) == 6 and not {t for t, _ in first} & {t for t, _ in second}
        assert _older(rest) is None and 'rel="first" href="/ui/failures"' in rest

        memory, _ = _rows(ui, failure_class="needs_more_memory")
        assert [c for _t, c in memory] == ["needs_more_memory"]
        assert _rows(ui, namespace="beta")[0] == memory
        assert _rows(ui, task="ALLOCATE")[0] == memory  # a part of the function, any case
        errors, html = _rows(ui, failure_class="error", error="BROKEN <7>")
        assert len(errors) == 1 and errors[0][1] == "error"
        assert '<option value="error" selected>' in html and 'value="BROKEN &lt;7&gt;"' in html
        # The search stays in the next page's link.
        alpha, html = _rows(ui, namespace="alpha", failure_class="error")
        assert len(alpha) == 50
        older = _older(html)
        assert older is not None and "namespace=alpha" in older and "failure_class=error" in older
        assert len(ROW.findall(ui.get(older).text)) == 5

        day = datetime.fromtimestamp(started, tz=timezone.utc).strftime("%Y-%m-%d")
        assert len(_rows(ui, since=day)[0]) == 50
        assert _rows(ui, until=day)[0] == []
        assert _rows(ui, since="2999-01-01T00:00")[0] == []

        rows, html = _rows(ui, failure_class="nonsense", since="yesterday")
        assert len(rows) == 50  # neither applied ...
        assert "&#39;nonsense&#39; is not a failure class" in html  # ... and both said
        assert "since: &#39;yesterday&#39; is not a date" in html
        _rows(ui, before="x:y")  # a forged cursor is the first page, not an error


def test_the_failures_page_shows_the_callers_namespaces_only(tmp_path: Path) -> None:
    tokens = {"a": "token-of-team-a-0123456789", "b": "token-of-team-b-0123456789"}
    toml = tmp_path / "tokens.toml"
    toml.write_text(
        "".join(
            f'[tokens.team-{k}]\ntoken = "{t}"\nrole = "submit"\nnamespaces = ["team-{k}"]\n\n'
            for k, t in tokens.items()
        )
    )
    toml.chmod(0o600)
    with serve(tmp_path, "--workers", "1", "--tokens-file", str(toml)) as served:
        url = served.url
        ids = {}
        for k, token in tokens.items():
            body = {
                "task": "oomguard.examples:fail",
                "args": {"message": f"failure of {k}"},
                "namespace": f"team-{k}",
                "name": f"failing-{k}",
            }
            answer = httpx.post(
                f"{url}/v1/jobs", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 201, answer.text
            ids[k] = answer.json()["job_id"]

        def failed(k: str) -> bool:
            status = httpx.get(
                f"{url}/v1/jobs/{ids[k]}", headers={"Authorization": f"Bearer {tokens[k]}"}
            ).json()
            return bool(status["state"] == "failed")

        for k in tokens:
            assert wait_for(lambda k=k: failed(k), timeout=60)
        login = httpx.post(
            f"{url}/ui/login",
            content=f"token={tokens['a']}",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": url},
        )
        assert login.status_code == 303, login.text
        cookies = {"oomguard_ui": SimpleCookie(login.headers["set-cookie"])["oomguard_ui"].value}
        assert httpx.get(f"{url}/ui/failures", follow_redirects=False).status_code == 303
        mine = httpx.get(f"{url}/ui/failures", cookies=cookies).text
        assert "failure of a" in mine and "failure of b" not in mine
        theirs = httpx.get(f"{url}/ui/failures?namespace=team-b", cookies=cookies).text
        assert "failure of b" not in theirs and "No failed task matches." in theirs
