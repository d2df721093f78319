"""Who may reach a tokenless loopback server: requests a page of another site could make
(no JSON content type, a foreign Origin, a rebound Host name) are refused before any route
runs; jobs are named by whole ids only. Against a real `oomguard serve` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fixtures.serve_process import Served, serve

SLEEP = {"task": "oomguard.examples:sleep", "args": {"seconds": 30}, "count": 3}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("access")
    # --allowed-host through its environment variable (space-separated names)
    names = {"OOMGUARD_ALLOWED_HOST": "oomguard.internal other.internal"}
    with serve(tmp, "--workers", "1", env=names) as served:
        yield served


def job_state(url: str, job_id: str) -> dict[str, object]:
    status: dict[str, object] = httpx.get(f"{url}/v1/jobs/{job_id}").json()
    return status


def test_cross_site_requests_cannot_cancel(server: Served) -> None:
    url = server.url
    r = httpx.post(f"{url}/v1/jobs", json=SLEEP)
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    cancel = f"{url}/v1/jobs/{job_id}/cancel"
    # What a browser sends for a page of another site without a preflight: a "simple"
    # request (no content type, or text/plain), with that site's Origin.
    attempts = [
        ({"Origin": "http://evil.example"}, 403, "origin_not_allowed"),
        ({"Origin": "null"}, 403, "origin_not_allowed"),
        ({}, 415, "unsupported_media_type"),
        ({"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        (
            {"Content-Type": "application/json", "Origin": f"http://evil.example:{server.port}"},
            403,
            "origin_not_allowed",
        ),
    ]
    for headers, status, code in attempts:
        refused = httpx.post(cancel, headers=headers)
        assert refused.status_code == status, (headers, refused.text)
        assert refused.json()["error"]["code"] == code
        forgot = httpx.delete(f"{url}/v1/jobs/{job_id}", headers=headers)
        assert forgot.status_code == status, (headers, forgot.text)
    # A one-character prefix names no job over HTTP (the CLI on the store keeps prefixes).
    for prefix in (job_id[:1], job_id[:6], job_id[:-1]):
        r = httpx.post(f"{url}/v1/jobs/{prefix}/cancel", json={})
        assert r.status_code == 404, r.text
        assert httpx.get(f"{url}/v1/jobs/{prefix}").status_code == 404
        assert httpx.get(f"{url}/v1/jobs/{prefix}/tasks").status_code == 404
    seen = job_state(url, job_id)
    assert seen["state"] in ("waiting", "running"), seen
    assert seen["counts"]["cancelled"] == 0  # type: ignore[index]
    # The server's own origin, a JSON request, or the client header: allowed.
    same = httpx.get(f"{url}/v1/jobs/{job_id}", headers={"Origin": url})
    assert same.status_code == 200, same.text
    done = httpx.post(cancel, headers={"X-Oomguard-Client": "test"})
    assert done.status_code == 200, done.text
    assert done.json()["cancelled"] == 3


def test_host_must_name_this_server(server: Served) -> None:
    url = server.url
    for host in (f"evil.example:{server.port}", "evil.example", f"127.0.0.2:{server.port}"):
        r = httpx.get(f"{url}/v1/jobs", headers={"Host": host})
        assert r.status_code == 403, (host, r.text)
        assert r.json()["error"]["code"] == "host_not_allowed"
        posted = httpx.post(f"{url}/v1/jobs", json=SLEEP, headers={"Host": host})
        assert posted.status_code == 403
    for host in (
        f"127.0.0.1:{server.port}",
        f"localhost:{server.port}",
        "oomguard.internal",
        f"other.internal:{server.port}",
    ):
        r = httpx.get(f"{url}/v1/jobs", headers={"Host": host})
        assert r.status_code == 200, (host, r.text)
