"""Who may see the dashboard of a `oomguard serve` with a token: the login form sets an
HttpOnly, SameSite=Strict session cookie that only the dashboard's pages (GET) accept,
which ends at logout and expires; failed logins back off; pages are never framed. The
API's token, Host, Origin and content-type checks stay as they were. Against a real
server."""

from __future__ import annotations

import time
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
    assert form.headers["x-frame-options"] == "DENY"

    wrong = _login(url, "not-the-token-at-all-000000")
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers
    assert "not a token of this server" in wrong.text

    ok = _login(url, TOKEN)
    assert ok.status_code == 303, ok.text
    assert ok.headers["location"] == "/ui/"
    set_cookie = ok.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=strict", "path=/ui"):
        assert attribute in set_cookie, set_cookie
    value = _cookie(ok)
    assert TOKEN not in value  # a random session id, never the token itself

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
    other = httpx.post(
        f"{url}/v1/jobs",
        content="x=1",
        headers={**FORM, "Origin": url, "Authorization": f"Bearer {TOKEN}"},
    )
    assert other.status_code == 415


def test_a_tokenless_loopback_server_shows_its_pages_to_loopback(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "1") as served:
        url = served.url
        r = httpx.post(
            f"{url}/v1/jobs",
            json={"task": "oomguard.examples:noop", "args": {}, "name": "tokenless"},
        )
        assert r.status_code == 201, r.text
        page = httpx.get(f"{url}/ui/")
        assert page.status_code == 200 and "tokenless" in page.text
        assert 'class="badge">read-only' not in page.text  # the live server's dashboard
        login = httpx.get(f"{url}/ui/login", follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/ui/"
        # The Host check still holds.
        rebound = httpx.get(f"{url}/ui/", headers={"Host": f"evil.example:{served.port}"})
        assert rebound.status_code == 403


def _logout(url: str, cookie: str) -> httpx.Response:
    return httpx.post(
        f"{url}/ui/logout",
        content="",
        cookies={"oomguard_ui": cookie},
        headers={**FORM, "Origin": url},
        follow_redirects=False,
    )


def test_a_session_ends_at_logout_and_expires(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    args = ("--workers", "1", "--token-file", str(token_file), "--session-ttl", "3s")
    with serve(tmp_path, *args) as served:
        url = served.url
        cookie = _cookie(_login(url, TOKEN))
        assert "max-age=3" in _login(url, TOKEN).headers["set-cookie"].lower()
        page = httpx.get(f"{url}/ui/", cookies={"oomguard_ui": cookie})
        assert page.status_code == 200
        assert 'action="/ui/logout"' in page.text
        out = _logout(url, cookie)
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert 'oomguard_ui=""' in out.headers["set-cookie"]  # the browser drops it
        # The cookie, kept by an attacker who copied it, opens nothing after the logout.
        after = httpx.get(f"{url}/ui/", cookies={"oomguard_ui": cookie}, follow_redirects=False)
        assert after.status_code == 303 and after.headers["location"] == "/ui/login"
        # A logout from another site is refused (it could log a user out at will).
        fresh = _cookie(_login(url, TOKEN))
        foreign = httpx.post(
            f"{url}/ui/logout",
            cookies={"oomguard_ui": fresh},
            headers={**FORM, "Origin": "http://evil.example"},
        )
        assert foreign.status_code == 403
        assert httpx.get(f"{url}/ui/", cookies={"oomguard_ui": fresh}).status_code == 200
        time.sleep(3.5)
        expired = httpx.get(f"{url}/ui/", cookies={"oomguard_ui": fresh}, follow_redirects=False)
        assert expired.status_code == 303


def test_failed_logins_back_off(server: Served) -> None:
    url = server.url
    assert _login(url, TOKEN).status_code == 303  # starts from no failures
    for _ in range(3):
        assert _login(url, "a-guess-at-the-token-000000").status_code == 401
    slowed = _login(url, "a-guess-at-the-token-000001")
    assert slowed.status_code == 429, slowed.text
    wait = int(slowed.headers["retry-after"])
    assert wait >= 1 and "too many failed logins" in slowed.text
    # While it waits even the right token is not tried: guessing gets no faster.
    early = _login(url, TOKEN)
    assert early.status_code == 429 and "set-cookie" not in early.headers
    time.sleep(wait + 0.2)
    assert _login(url, TOKEN).status_code == 303
    assert _login(url, "a-guess-at-the-token-000002").status_code == 401  # counted afresh
    assert _login(url, TOKEN).status_code == 303
