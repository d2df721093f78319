"""Tenancy against a real `oomguard serve --tokens-file`: each token reaches its own
namespaces with its own role; another namespace's job is missing (404, the same answer as
a job that does not exist), listings, the dashboard and /metrics show the caller's
namespaces only, `force` needs admin, unknown query parameters are 422, and each request
that changes state leaves an audit line naming the token's label (never the token)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.polling import wait_for
from fixtures.serve_process import Served, serve

TOKENS = {
    "team-a-ci": ("token-of-team-a-0123456789", "submit", ["team-a"]),
    "team-b-ci": ("token-of-team-b-0123456789", "submit", ["team-b"]),
    "team-a-viewer": ("token-of-viewer-0123456789", "read", ["team-a"]),
    "ops": ("token-of-the-admin-012345678", "admin", ["*"]),
}


def tokens_toml() -> str:
    lines = []
    for label, (token, role, namespaces) in TOKENS.items():
        lines += [
            f"[tokens.{label}]",
            f'token = "{token}"',
            f'role = "{role}"',
            f"namespaces = {json.dumps(namespaces)}",
            "",
        ]
    return "\n".join(lines)


def auth(label: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[label][0]}", "X-Oomguard-Client": "test"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("tenancy")
    tokens = tmp / "tokens.toml"
    tokens.write_text(tokens_toml())
    tokens.chmod(0o600)
    with serve(tmp, "--workers", "1", "--tokens-file", str(tokens)) as served:
        yield served


def submit(url: str, label: str, namespace: str, name: str) -> httpx.Response:
    body = {"task": "oomguard.examples:noop", "args": {"x": name}, "namespace": namespace}
    return httpx.post(f"{url}/v1/jobs", json={**body, "name": name}, headers=auth(label))


def finished(url: str, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth("ops")).json()
        return status if status["state"] in ("succeeded", "failed") else None

    result: dict[str, Any] = wait_for(done, timeout=60)
    return result


@pytest.fixture(scope="module")
def jobs(server: Served) -> dict[str, str]:
    a = submit(server.url, "team-a-ci", "team-a", "job-of-team-a")
    b = submit(server.url, "team-b-ci", "team-b", "job-of-team-b")
    assert a.status_code == 201 and b.status_code == 201, (a.text, b.text)
    ids = {"a": a.json()["job_id"], "b": b.json()["job_id"]}
    for job_id in ids.values():
        finished(server.url, job_id)
    return ids


def test_another_namespaces_job_is_missing_not_forbidden(
    server: Served, jobs: dict[str, str]
) -> None:
    url, b = server.url, jobs["b"]
    absent = "0123456789ab"
    for method, path in (
        ("GET", "/v1/jobs/{}"),
        ("GET", "/v1/jobs/{}/tasks?params=full"),
        ("GET", "/v1/jobs/{}/failures"),
        ("POST", "/v1/jobs/{}/cancel"),
        ("DELETE", "/v1/jobs/{}"),
    ):
        theirs = httpx.request(method, url + path.format(b), headers=auth("team-a-ci"), json={})
        nothing = httpx.request(
            method, url + path.format(absent), headers=auth("team-a-ci"), json={}
        )
        assert theirs.status_code == 404, (method, path, theirs.text)
        assert nothing.status_code == 404
        # The same answer as for a job that does not exist, the id aside: no existence leak.
        assert theirs.json()["error"]["code"] == nothing.json()["error"]["code"] == "job_not_found"
        assert theirs.text.replace(b, absent) == nothing.text
    # The job is still there for its own team, untouched.
    own = httpx.get(f"{url}/v1/jobs/{b}", headers=auth("team-b-ci"))
    assert own.status_code == 200 and own.json()["state"] == "succeeded"


def test_listings_show_the_callers_namespaces_and_honour_the_parameter(
    server: Served, jobs: dict[str, str]
) -> None:
    url = server.url

    def listed(label: str, query: str = "") -> set[str]:
        r = httpx.get(f"{url}/v1/jobs{query}", headers=auth(label))
        assert r.status_code == 200, r.text
        return {j["job_id"] for j in r.json()["jobs"]}

    assert listed("team-a-ci") == {jobs["a"]}
    assert listed("team-a-viewer") == {jobs["a"]}
    assert listed("team-b-ci") == {jobs["b"]}
    assert listed("team-a-ci", "?namespace=team-b") == set()
    assert listed("ops") >= {jobs["a"], jobs["b"]}
    assert listed("ops", "?namespace=team-b") == {jobs["b"]}
    assert listed("ops", "?namespace=team-a") == {jobs["a"]}


def test_roles_and_namespaces_limit_what_a_token_changes(
    server: Served, jobs: dict[str, str]
) -> None:
    url = server.url
    into_b = submit(url, "team-a-ci", "team-b", "planted")
    assert into_b.status_code == 403, into_b.text
    assert into_b.json()["error"]["code"] == "forbidden"
    viewer = submit(url, "team-a-viewer", "team-a", "from-a-viewer")
    assert viewer.status_code == 403
    assert (
        httpx.post(
            f"{url}/v1/jobs/{jobs['a']}/cancel", headers=auth("team-a-viewer"), json={}
        ).status_code
        == 403
    )
    # force (dropping unwritten results) needs admin, even in the caller's own namespace.
    forced = httpx.delete(f"{url}/v1/jobs/{jobs['a']}?force=true", headers=auth("team-a-ci"))
    assert forced.status_code == 403, forced.text
    assert "admin" in forced.json()["error"]["message"]
    assert httpx.get(f"{url}/v1/jobs/{jobs['a']}", headers=auth("team-a-ci")).status_code == 200
    # The heap report is for an admin of every namespace.
    assert httpx.get(f"{url}/v1/debug/heap", headers=auth("team-a-ci")).status_code == 403
    # No token, or a token not in the file: 401.
    assert httpx.get(f"{url}/v1/jobs").status_code == 401
    wrong = {"Authorization": "Bearer not-a-token-of-this-server-0"}
    assert httpx.get(f"{url}/v1/jobs", headers=wrong).status_code == 401


def test_an_admin_forgets_with_force(server: Served) -> None:
    url = server.url
    r = submit(url, "team-b-ci", "team-b", "to-forget")
    job_id = r.json()["job_id"]
    finished(url, job_id)
    forced = httpx.delete(f"{url}/v1/jobs/{job_id}?force=true", headers=auth("ops"))
    assert forced.status_code == 200, forced.text
    assert httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth("ops")).status_code == 404


def test_unknown_query_parameters_are_refused(server: Served, jobs: dict[str, str]) -> None:
    url = server.url
    for path in (
        "/v1/jobs?namspace=team-b",  # misspelt: it must not list every namespace
        f"/v1/jobs/{jobs['a']}?verbose=1",
        f"/v1/jobs/{jobs['a']}/tasks?statee=failed",
        "/metrics?namespace=team-b",
    ):
        r = httpx.get(url + path, headers=auth("ops"))
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
        assert "unknown query parameter" in r.json()["error"]["message"]
    removed = httpx.delete(f"{url}/v1/jobs/{jobs['a']}?forse=true", headers=auth("ops"))
    assert removed.status_code == 422
    assert httpx.get(f"{url}/v1/jobs/{jobs['a']}", headers=auth("ops")).status_code == 200


def test_metrics_are_scoped_to_the_callers_namespaces(server: Served, jobs: dict[str, str]) -> None:
    url = server.url
    mine = httpx.get(f"{url}/metrics", headers=auth("team-a-ci"))
    assert mine.status_code == 200, mine.text
    assert 'oomguard_submitted_tasks_total{namespace="team-a"}' in mine.text
    assert "team-b" not in mine.text
    assert "oomguard_attempt_failures" not in mine.text  # by function: other teams' names
    assert "oomguard_worker_rss_bytes" not in mine.text
    assert 'oomguard_tasks{state="succeeded"} 1.0' in mine.text
    everything = httpx.get(f"{url}/metrics", headers=auth("ops")).text
    assert 'oomguard_submitted_tasks_total{namespace="team-b"}' in everything
    assert "oomguard_attempt_failures" in everything


def test_the_dashboard_shows_the_callers_namespaces(server: Served, jobs: dict[str, str]) -> None:
    url = server.url
    login = httpx.post(
        f"{url}/ui/login",
        content=f"token={TOKENS['team-a-viewer'][0]}",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": url},
    )
    assert login.status_code == 303, login.text
    cookies = {"oomguard_ui": SimpleCookie(login.headers["set-cookie"])["oomguard_ui"].value}
    page = httpx.get(f"{url}/ui/", cookies=cookies)
    assert page.status_code == 200
    assert "job-of-team-a" in page.text and "job-of-team-b" not in page.text
    assert httpx.get(f"{url}/ui/jobs/{jobs['a']}", cookies=cookies).status_code == 200
    theirs = httpx.get(f"{url}/ui/jobs/{jobs['b']}", cookies=cookies)
    assert theirs.status_code == 404 and "job-of-team-b" not in theirs.text
    tasks = httpx.get(f"{url}/v1/jobs/{jobs['b']}/tasks", headers=auth("team-b-ci")).json()["tasks"]
    task_page = httpx.get(f"{url}/ui/tasks/{tasks[0]['task_id']}", cookies=cookies)
    assert task_page.status_code == 404


def test_each_change_leaves_an_audit_line_naming_the_label(
    server: Served, jobs: dict[str, str]
) -> None:
    r = submit(server.url, "team-b-ci", "team-b", "audited")
    job_id = r.json()["job_id"]
    other = httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel", headers=auth("team-a-ci"), json={})
    assert other.status_code == 404, other.text

    def lines() -> list[dict[str, Any]]:
        found = []
        for line in server.output().splitlines():
            start = line.find('{"audit"')
            if start >= 0:
                found.append(json.loads(line[start:]))
        return found

    def submitted() -> dict[str, Any] | None:
        return next((x for x in lines() if x.get("job_id") == job_id), None)

    entry = wait_for(submitted, timeout=10)
    assert entry["label"] == "team-b-ci"
    assert entry["method"] == "POST" and entry["path"] == "/v1/jobs"
    assert entry["status"] == 201 and entry["namespace"] == "team-b"
    # Each request's line is written as it ends: the refusal's may follow the submission's.
    refused = wait_for(
        lambda: [
            x for x in lines() if x["path"] == f"/v1/jobs/{job_id}/cancel" and x["status"] == 404
        ],
        timeout=10,
        what="the refused cancel's audit line",
    )
    assert refused[0]["label"] == "team-a-ci"
    output = server.output()
    for token, _, _ in TOKENS.values():
        assert token not in output


def test_a_tokens_file_others_can_read_is_refused(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(tokens_toml())
    tokens.chmod(0o644)
    cmd = [sys.executable, "-m", "oomguard.cli.main", "serve", "--store", str(tmp_path / "s")]
    run = subprocess.run([*cmd, "--tokens-file", str(tokens)], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert "open to its group or others" in run.stderr and "chmod 600" in run.stderr
    tokens.chmod(0o600)
    token = tmp_path / "token"
    token.write_text("x" * 20)
    token.chmod(0o600)
    both = subprocess.run(
        [*cmd, "--tokens-file", str(tokens), "--token-file", str(token)],
        capture_output=True,
        text=True,
    )
    assert both.returncode == 2 and "do not go together" in both.stderr
    tokens.write_text('[tokens.x]\ntoken = "short"\nrole = "admin"\nnamespaces = ["*"]\n')
    short = subprocess.run([*cmd, "--tokens-file", str(tokens)], capture_output=True, text=True)
    assert short.returncode == 2 and "at least 16 characters" in short.stderr
    never = subprocess.run([*cmd, "--session-ttl", "0s"], capture_output=True, text=True)
    assert never.returncode == 2 and "longer than 0 s" in never.stderr
    assert not (tmp_path / "s").exists()  # nothing was created
