"""The dashboard's actions against a real `oomguard serve --tokens-file`: retry a job's
failed tasks (all, by class, a selection), cancel a job, raise memory and retry; each a GET
that shows how many tasks it touches and changes nothing, then a POST with the session's
CSRF token and the server's own Origin; refused for a read-only token (403), another
namespace (404), a foreign Origin, a missing or wrong CSRF token; each POST audited."""

from __future__ import annotations

import html
import json
import re
import sqlite3
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from fixtures.polling import wait_for
from fixtures.serve_process import Served, serve

TOKENS = {
    "team-a-ci": ("token-of-team-a-0123456789", "submit", ["team-a"]),
    "team-a-viewer": ("token-of-viewer-0123456789", "read", ["team-a"]),
    "team-b-ci": ("token-of-team-b-0123456789", "submit", ["team-b"]),
}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
COUNT = re.compile(r"It touches <strong>(\d+)</strong> task")
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def _tokens_file(tmp: Path) -> Path:
    lines = []
    for label, (token, role, namespaces) in TOKENS.items():
        lines += [
            f"[tokens.{label}]",
            f'token = "{token}"',
            f'role = "{role}"',
            f"namespaces = {json.dumps(namespaces)}",
            "",
        ]
    path = tmp / "tokens.toml"
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


def _serve(tmp: Path, *args: str) -> Any:
    tokens = tmp / "tokens.toml"
    if not tokens.exists():
        _tokens_file(tmp)
    return serve(tmp, "--tokens-file", str(tokens), "--isolation", "watchdog", *args)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("ui-actions")
    with _serve(tmp, "--workers", "2", "--worker-memory", "96MiB") as served:
        yield served


def _bearer(label: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[label][0]}", "X-Oomguard-Client": "test"}


def _submit(url: str, body: dict[str, Any], label: str = "team-a-ci") -> str:
    r = httpx.post(f"{url}/v1/jobs", json={"namespace": "team-a", **body}, headers=_bearer(label))
    assert r.status_code == 201, r.text
    job_id: str = r.json()["job_id"]
    return job_id


def _status(url: str, job_id: str) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(
        f"{url}/v1/jobs/{job_id}", headers=_bearer("team-a-ci")
    ).json()
    return status


def _finished(url: str, job_id: str, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = _status(url, job_id)
        return status if status["state"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = wait_for(done, timeout=timeout)
    return result


def _login(url: str, label: str) -> dict[str, str]:
    r = httpx.post(
        f"{url}/ui/login",
        content=f"token={TOKENS[label][0]}",
        headers={**FORM, "Origin": url},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return {"oomguard_ui": SimpleCookie(r.headers["set-cookie"])["oomguard_ui"].value}


def _confirm(url: str, path: str, cookies: dict[str, str]) -> tuple[int, str]:
    """The confirmation page's count and CSRF token."""
    page = httpx.get(f"{url}{path}", cookies=cookies)
    assert page.status_code == 200, page.text
    # Not no-referrer: under it a browser's form POST says "Origin: null" (refused).
    assert page.headers["referrer-policy"] == "same-origin"
    count, token = COUNT.search(page.text), CSRF.search(page.text)
    assert count is not None and token is not None, page.text
    return int(count[1]), token[1]


def _post(
    url: str, path: str, cookies: dict[str, str], form: dict[str, str], origin: str | None
) -> httpx.Response:
    headers = {**FORM, **({"Origin": origin} if origin is not None else {})}
    body = "&".join(f"{k}={v}" for k, v in form.items())
    return httpx.post(f"{url}{path}", content=body, headers=headers, cookies=cookies)


def _tasks(served: Served, job_id: str) -> dict[int, tuple[str, int, int | None]]:
    """Each task's (state, attempts, declared memory), read from the store file."""
    with sqlite3.connect(f"file:{served.store}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT id, state, attempts, memory FROM tasks WHERE job_id = ?", (job_id,)
        ).fetchall()
    return {int(r[0]): (str(r[1]), int(r[2]), r[3]) for r in rows}


def _audit(served: Served) -> list[dict[str, Any]]:
    found = []
    for line in served.output().splitlines():
        start = line.find("{")
        if '"audit": "request"' in line and start >= 0:
            found.append(json.loads(line[start:]))
    return found


def test_retry_all_by_class_and_chosen_with_a_confirmation(server: Served) -> None:
    url = server.url
    job_id = _submit(
        url,
        {
            "task": "oomguard.examples:fail",
            "tasks": [{"message": f"broken {i}"} for i in range(3)],
            "name": "to-retry",
        },
    )
    assert _finished(url, job_id)["state"] == "failed"
    before = _tasks(server, job_id)
    assert sorted(s for s, _a, _m in before.values()) == ["failed"] * 3
    ids = sorted(before)
    cookies = _login(url, "team-a-ci")

    # The job page links to the actions; a GET of each changes nothing.
    page = httpx.get(f"{url}/ui/jobs/{job_id}", cookies=cookies).text
    assert f'href="/ui/actions/jobs/{job_id}/retry"' in page
    assert f'href="/ui/actions/jobs/{job_id}/retry?failure_class=error"' in page
    assert f'href="/ui/actions/jobs/{job_id}/cancel"' in page
    base = f"/ui/actions/jobs/{job_id}/retry"
    assert _confirm(url, base, cookies)[0] == 3
    assert _confirm(url, base + "?failure_class=error", cookies)[0] == 3
    assert _confirm(url, base + "?failure_class=oom_cgroup", cookies)[0] == 0
    chosen = f"{ids[0]},{ids[1]}"
    count, token = _confirm(url, f"{base}?tasks={chosen}", cookies)
    assert count == 2
    assert _confirm(url, f"/ui/actions/jobs/{job_id}/cancel", cookies)[0] == 0
    bad = httpx.get(f"{url}{base}?failure_class=nonsense", cookies=cookies)
    assert bad.status_code == 400 and "no failure class" in bad.text
    assert _tasks(server, job_id) == before

    # The POST does it: the chosen two run again (a scheduler of the store takes them).
    done = _post(url, base, cookies, {"csrf": token, "tasks": chosen}, url)
    assert done.status_code == 200, done.text
    assert "2 task(s) ready to run again" in done.text

    def rerun() -> dict[int, tuple[str, int, int | None]] | None:
        now = _tasks(server, job_id)
        return now if all(s == "failed" for s, _a, _m in now.values()) and now != before else None

    after = wait_for(rerun, timeout=60)
    assert [after[i][1] - before[i][1] for i in ids] == [1, 1, 0]
    assert _finished(url, job_id)["state"] == "failed"

    # By class: all three again.
    count, token = _confirm(url, base + "?failure_class=error", cookies)
    assert count == 3
    done = _post(url, base, cookies, {"csrf": token, "failure_class": "error"}, url)
    assert "3 task(s) ready to run again" in done.text
    entry = wait_for(
        lambda: next(
            (x for x in _audit(server) if x.get("action") == "retry" and x.get("tasks") == 3),
            None,
        ),
        timeout=10,
    )
    assert entry["label"] == "team-a-ci" and entry["job_id"] == job_id
    assert entry["path"] == base and entry["status"] == 200


def test_retry_all_counts_and_retries_the_aggregations_as_oomguard_retry(
    server: Served,
) -> None:
    url = server.url
    job_id = _submit(
        url,
        {
            # Over --worker-memory (96MiB): each replicate is killed at the cap.
            "task": "oomguard.examples:allocate",
            "args": {"mib": 200, "hold": 0.5},
            "fanout": 2,
            "aggregate": "oomguard.examples:mean_of",
        },
    )
    assert _finished(url, job_id)["state"] == "failed"

    def ended() -> list[str] | None:
        states = [s for s, _a, _m in _tasks(server, job_id).values()]
        return states if all(s in ("failed", "succeeded") for s in states) else None

    # The aggregation and at least one replicate failed (the watchdog may miss a short one).
    states = wait_for(ended, timeout=30)
    failed = states.count("failed")
    assert failed >= 2, states
    cookies = _login(url, "team-a-ci")
    path = f"/ui/actions/jobs/{job_id}/retry"
    count, token = _confirm(url, path, cookies)
    assert count == failed
    assert _confirm(url, f"{path}?failure_class=upstream_failed", cookies)[0] == 0
    done = _post(url, path, cookies, {"csrf": token}, url)
    assert done.status_code == 200 and f"{failed} task(s) ready to run again" in done.text
    assert _finished(url, job_id)["state"] == "failed"


def test_cancel_with_a_confirmation(server: Served) -> None:
    url = server.url
    job_id = _submit(url, {"task": "oomguard.examples:sleep", "args": {"seconds": 30}, "count": 4})
    cookies = _login(url, "team-a-ci")
    path = f"/ui/actions/jobs/{job_id}/cancel"
    count, token = _confirm(url, path, cookies)
    assert count == 4
    assert _status(url, job_id)["state"] not in ("cancelled", "failed", "succeeded")
    done = _post(url, path, cookies, {"csrf": token}, url)
    assert done.status_code == 200 and "4 task(s) cancelled" in done.text
    assert _finished(url, job_id)["state"] == "cancelled"


def test_refused_without_the_token_from_elsewhere_and_for_readers(server: Served) -> None:
    url = server.url
    job_id = _submit(url, {"task": "oomguard.examples:fail", "count": 2})
    assert _finished(url, job_id)["state"] == "failed"
    before = _tasks(server, job_id)
    path = f"/ui/actions/jobs/{job_id}/retry"
    cookies = _login(url, "team-a-ci")
    token = _confirm(url, path, cookies)[1]

    # No CSRF token, a wrong one, another session's: 403, nothing done.
    other = _login(url, "team-a-ci")
    other_token = _confirm(url, path, other)[1]
    assert other_token != token
    for form in ({}, {"csrf": "0" * 64}, {"csrf": other_token}):
        r = _post(url, path, cookies, form, url)
        assert r.status_code == 403, (form, r.text)
        assert "CSRF token" in html.unescape(r.text)
    # A foreign Origin, a null one: refused by the guard; no Origin: the cookie is not taken.
    for origin in ("http://evil.example", "null"):
        r = _post(url, path, cookies, {"csrf": token}, origin)
        assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    r = _post(url, path, cookies, {"csrf": token}, None)
    assert r.status_code == 401
    # Another content type than the form (a cross-site "simple" text/plain POST): refused.
    r = httpx.post(
        f"{url}{path}",
        content=f"csrf={token}",
        headers={"Content-Type": "text/plain", "Origin": url},
        cookies=cookies,
    )
    assert r.status_code == 415

    # A read-only token sees the job but may not act (403 on the page and on the POST).
    viewer = _login(url, "team-a-viewer")
    assert httpx.get(f"{url}/ui/jobs/{job_id}", cookies=viewer).status_code == 200
    page = httpx.get(f"{url}{path}", cookies=viewer)
    assert page.status_code == 403 and "needs the submit role" in html.unescape(page.text)
    assert "csrf" not in page.text
    r = _post(url, path, viewer, {"csrf": token}, url)  # its page gave it no token
    assert r.status_code == 403
    # Another namespace's job is missing.
    foreign = _login(url, "team-b-ci")
    assert httpx.get(f"{url}{path}", cookies=foreign).status_code == 404
    r = _post(url, f"/ui/actions/jobs/{job_id}/cancel", foreign, {"csrf": "x"}, url)
    assert r.status_code == 403  # its token is not this form's: refused before the job
    assert _tasks(server, job_id) == before

    # A request's audit line is written once its answer is sent: wait for the last one's.
    def refusals() -> list[dict[str, Any]] | None:
        lines = [x for x in _audit(server) if x.get("refused") == "csrf"]
        return lines if any(x["label"] == "team-b-ci" for x in lines) else None

    refused = wait_for(refusals, timeout=10, what="the foreign cancel's audit line")
    assert all(x["status"] == 403 for x in refused)
    assert any(x["label"] == "team-a-viewer" and x["status"] == 403 for x in refused)


def test_oom_killed_tasks_retried_with_more_memory_from_the_failures_page(
    tmp_path: Path,
) -> None:
    # A task needs more than --worker-memory: it fails as needs_more_memory.
    with _serve(tmp_path, "--workers", "1", "--worker-memory", "96MiB") as first:
        job_id = _submit(
            first.url,
            {
                "task": "oomguard.examples:allocate",
                "tasks": [{"mib": 200, "hold": 0.5}, {"mib": 1}],
            },
        )
        status = _finished(first.url, job_id, timeout=120)
        assert status["state"] == "failed", status
    # The operator gives workers more memory; in the dashboard: raise and retry.
    with _serve(tmp_path, "--workers", "1", "--worker-memory", "512MiB") as served:
        url = served.url
        cookies = _login(url, "team-a-ci")
        failures = httpx.get(
            f"{url}/ui/failures?failure_class=needs_more_memory", cookies=cookies
        ).text
        # The big task was killed at the cap (the small one of the same key succeeded).
        failed = sorted(i for i, (s, _a, _m) in _tasks(served, job_id).items() if s == "failed")
        assert len(failed) == 1
        link = re.search(
            r'<a class="raise" href="([^"]+)">retry these 1 with more memory', failures
        )
        assert link is not None, failures
        ask = httpx.get(f"{url}{html.unescape(link[1])}", cookies=cookies)
        assert ask.status_code == 200 and 'name="memory"' in ask.text
        assert f'name="tasks" value="{failed[0]}"' in ask.text
        chosen = ",".join(str(i) for i in failed)
        path = f"/ui/actions/jobs/{job_id}/raise"
        count, token = _confirm(url, f"{path}?tasks={chosen}&memory=300MiB", cookies)
        assert count == 1
        assert [_tasks(served, job_id)[i][0] for i in failed] == ["failed"]  # GET: no change
        # The key's own form on the job page does the same for the whole key.
        page = httpx.get(f"{url}/ui/jobs/{job_id}", cookies=cookies).text
        with sqlite3.connect(f"file:{served.store}?mode=ro", uri=True) as db:
            (key,) = {r[0] for r in db.execute("SELECT coalesce(memory_key, fn) FROM tasks")}
        assert f'name="memory_key" value="{html.escape(key)}"' in page
        by_key = f"{path}?{urlencode({'memory_key': key, 'memory': '300MiB'})}"
        assert _confirm(url, by_key, cookies)[0] == 1
        form = {"csrf": token, "tasks": chosen, "memory": "300MiB"}
        done = _post(url, path, cookies, form, url)
        assert done.status_code == 200, done.text
        assert "1 task(s) ready to run again with at least 300MiB" in done.text
        assert all(_tasks(served, job_id)[i][2] == 300 * 1024 * 1024 for i in failed)
        assert _finished(url, job_id, timeout=120)["state"] == "succeeded"
