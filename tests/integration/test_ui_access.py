"""Who may see the dashboard of a `oomguard serve` with a token: the login form sets an
HttpOnly, SameSite=Strict cookie that only the dashboard's pages (GET) accept; the API's
token, Host, Origin and content-type checks stay as they were. Against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest

from fixtures.serve_process import Served, serve

TOKEN = "dashboard-token-for-tests-0123456789"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp("ui-access")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with serve(tmp, "--workers", "1", "--token-file", str(token_file)) as served:
        yield served


def _login(url: str, token: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/ui/login",
        content=f"token={token}",
        headers={**FORM, "Origin": url, **headers},
        follow_redirects=False,
    )


def _cookie(response: httpx.Response) -> str:
    jar = SimpleCookie(response.headers["set-cookie"])
    return jar["oomguard_ui"].value


def test_pages_want_a_login_and_the_login_sets_a_strict_httponly_cookie(server: Served) -> None:
    url = server.url
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    submitted = httpx.post(
        f"{url}/v1/jobs",
        json={"task": "oomguard.examples:noop", "args": {"x": 1}, "name": "shown-after-login"},
        headers=bearer,
    )
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["job_id"]

    for path in ("/ui/", "/ui", f"/ui/jobs/{job_id}", "/ui/tasks/1"):
        r = httpx.get(f"{url}{path}", follow_redirects=False)
        assert r.status_code == 303, (path, r.text)
        assert r.headers["location"] == "/ui/login"
    # The login form's stylesheet and script are files of the package, served to anyone.
    assert httpx.get(f"{url}/ui/static/style.css").status_code == 200
    assert httpx.get(f"{url}/ui/static/nope.css").status_code == 404
    form = httpx.get(f"{url}/ui/login")
    assert form.status_code == 200
    assert '<form method="post" action="/ui/login">' in form.text
    assert "frame-ancestors 'none'" in form.headers["content-security-policy"]

    wrong = _login(url, "not-the-token-at-all-000000")
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers
    assert "not the server&#39;s token" in wrong.text or "not the server's token" in wrong.text

    ok = _login(url, TOKEN)
    assert ok.status_code == 303, ok.text
    assert ok.headers["location"] == "/ui/"
    set_cookie = ok.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=strict", "path=/ui"):
        assert attribute in set_cookie, set_cookie
    value = _cookie(ok)
    assert TOKEN not in value  # derived from the token, never the token itself

    cookies = {"oomguard_ui": value}
    page = httpx.get(f"{url}/ui/", cookies=cookies)
    assert page.status_code == 200, page.text
    assert "shown-after-login" in page.text
    assert f'href="/ui/jobs/{job_id}"' in page.text
    assert httpx.get(f"{url}/ui/jobs/{job_id}", cookies=cookies).status_code == 200
    # The bearer token opens the pages too.
    assert httpx.get(f"{url}/ui/", headers=bearer).status_code == 200
    # A cookie that is not the server's opens nothing.
    forged = httpx.get(f"{url}/ui/", cookies={"oomguard_ui": "0" * 64}, follow_redirects=False)
    assert forged.status_code == 303


def test_the_cookie_opens_nothing_of_the_api(server: Served) -> None:
    url = server.url
    cookies = {"oomguard_ui": _cookie(_login(url, TOKEN))}
    for method, path in (
        ("GET", "/v1/jobs"),
        ("GET", "/metrics"),
        ("POST", "/v1/jobs"),
        ("DELETE", "/v1/jobs/abc"),
        ("POST", "/ui/"),  # a page takes the cookie only for GET
    ):
        r = httpx.request(
            method,
            f"{url}{path}",
            cookies=cookies,
            headers={"Content-Type": "application/json", "Origin": url},
            content=b"{}" if method == "POST" else None,
        )
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["error"]["code"] == "unauthorized"


def test_the_login_form_is_refused_from_other_sites_and_without_an_origin(
    server: Served,
) -> None:
    url = server.url
    foreign = _login(url, TOKEN, Origin=f"http://evil.example:{server.port}")
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "origin_not_allowed"
    bare = httpx.post(f"{url}/ui/login", content=f"token={TOKEN}", headers=FORM)
    assert bare.status_code == 415
    assert "set-cookie" not in bare.headers
    # Another site's name in Host (DNS rebinding) gets no page and no form.
    for path in ("/ui/", "/ui/login"):
        r = httpx.get(f"{url}{path}", headers={"Host": f"evil.example:{server.port}"})
        assert r.status_code == 403, r.text
    # A form to any other path is still refused, logged in or not.
    other = httpx.post(f"{url}/v1/jobs", content="x=1", headers={**FORM, "Origin": url,
                       "Authorization": f"Bearer {TOKEN}"})
    assert other.status_code == 415


def test_a_tokenless_loopback_server_shows_its_pages_to_loopback(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "1") as served:
        url = served.url
        r = httpx.post(f"{url}/v1/jobs", json={"task": "oomguard.examples:noop", "args": {},
                                              "name": "tokenless"})
        assert r.status_code == 201, r.text
        page = httpx.get(f"{url}/ui/")
        assert page.status_code == 200 and "tokenless" in page.text
        assert 'class="badge">read-only' not in page.text  # the live server's dashboard
        login = httpx.get(f"{url}/ui/login", follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/ui/"
        # The Host check still holds.
        rebound = httpx.get(f"{url}/ui/", headers={"Host": f"evil.example:{served.port}"})
        assert rebound.status_code == 403
