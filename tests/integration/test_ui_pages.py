"""The dashboard's pages over a store that real schedulers wrote (real workers), served by
the read-only app of `oomguard ui`: the jobs page, a job with its failures, evidence,
estimates and charts, a task with every attempt, and a job page that follows a running
job (the store opened read-only beside the live scheduler)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

import oomguard
from fixtures.polling import wait_for
from fixtures.ui_process import Dashboard, dashboard

if TYPE_CHECKING:
    from conftest import RunCli


def _points(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-points="(\d+)"', html)]


def test_jobs_job_and_task_pages_of_a_finished_job(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with oomguard.Runner(store=str(path), workers=2, isolation="watchdog") as runner:
        ok = runner.sweep("oomguard.examples:allocate", [{"mib": 20, "hold": 0.3}] * 6)
        bad = runner.sweep("oomguard.examples:fail", [{"message": "broken <on purpose>"}] * 2)
        ok.wait(timeout=120, progress=False)
        bad.wait(timeout=120, progress=False)
        assert wait_for(lambda: runner.store.samples.count(ok.id) >= 1, timeout=30)
    with dashboard(path, tmp_path) as ui:
        _finished_job_pages(ui, ok.id, bad.id)


def _finished_job_pages(client: Dashboard, ok_id: str, bad_id: str) -> None:

    jobs = client.get("/ui/")
    assert jobs.status_code == 200
    assert "default-src 'none'" in jobs.headers["content-security-policy"]
    for job_id in (ok_id, bad_id):
        assert f'<a href="/ui/jobs/{job_id}">{job_id}</a>' in jobs.text
    row = jobs.text[jobs.text.index(f'data-job="{bad_id}"') :]
    row = row[: row.index("</tr>")]
    assert 'class="state failed"' in row and "error 2" in row
    assert '<progress value="2" max="2">' in row
    assert 'data-live="0"' in jobs.text

    page = client.get(f"/ui/jobs/{ok_id}").text
    assert 'class="state succeeded"' in page
    assert "6/6 (100.0%)" in page
    points = _points(page)
    assert len(points) == 3 and all(n > 0 for n in points), points  # memory, progress, rate
    assert "w1 RSS" in page
    assert "oomguard.examples:allocate" in page  # its memory key, learned
    assert re.search(r"<td class=\"num\">\d+</td>", page[page.index("Learned memory") :])

    failed = client.get(f"/ui/jobs/{bad_id}").text
    assert "broken &lt;on purpose&gt;" in failed and "<on purpose>" not in failed
    task_ids = re.findall(r'<tr class="failed-task">\s*<td><a href="/ui/tasks/(\d+)"', failed)
    assert len(task_ids) == 2
    task = client.get(f"/ui/tasks/{task_ids[0]}")
    assert task.status_code == 200
    assert "Traceback" in task.text and "RuntimeError" in task.text
    assert f'href="/ui/jobs/{bad_id}"' in task.text

    assert client.get("/ui/jobs/nope").status_code == 404
    assert client.get("/ui/tasks/999999").status_code == 404
    assert client.get("/ui/static/../web.py").status_code == 404
    assert client.get("/ui/static/live.js").headers["content-type"].startswith("text/javascript")
    # Read-only: nothing to post to, and no API.
    assert httpx.post(f"{client.url}/ui/", json={}).status_code == 405
    assert client.get("/v1/jobs").status_code == 404
    # The Host check of the API guards the dashboard too.
    port = client.url.rsplit(":", 1)[1]
    rebound = httpx.get(f"{client.url}/ui/", headers={"Host": f"evil.example:{port}"})
    assert rebound.status_code == 403


def test_the_page_of_a_running_job_follows_it(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with (
        oomguard.Runner(store=str(path), workers=1, isolation="watchdog") as runner,
        dashboard(path, tmp_path) as client,
    ):  # read-only, beside the live scheduler
        job = runner.sweep("oomguard.examples:sleep", [{"seconds": 0.4}] * 12)

        def finished() -> int:
            page = client.get(f"/ui/jobs/{job.id}").text
            found = re.search(r"(\d+)/12 \(", page)
            return int(found[1]) if found and 'data-live="1"' in page else -1

        first = wait_for(lambda: finished() >= 1 and finished(), timeout=60)
        assert wait_for(lambda: finished() > first, timeout=60)
        job.wait(timeout=120, progress=False)
        done = client.get(f"/ui/jobs/{job.id}").text
        assert 'data-live="0"' in done and "12/12" in done


def test_bad_input_to_oomguard_ui_is_an_error_and_creates_nothing(
    tmp_path: Path, cli: RunCli
) -> None:
    missing = tmp_path / "missing.sqlite"
    res = cli("ui", "--store", str(missing), "--listen", "127.0.0.1:0")
    assert res.returncode == 4, res.stderr  # ExitCode.STORE
    assert "no store at" in res.stderr and "Traceback" not in res.stderr
    assert not missing.exists()
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_text("hello")
    res = cli("ui", "--store", str(not_a_store), "--listen", "127.0.0.1:0")
    assert res.returncode == 4 and "not an oomguard store" in res.stderr, res.stderr
    assert not_a_store.read_text() == "hello"
    with oomguard.Runner(store=str(tmp_path / "s.sqlite"), workers=1):
        pass
    for listen, message in (("0.0.0.0:0", "without --token-file"), ("nope", "HOST:PORT")):
        res = cli("ui", "--store", str(tmp_path / "s.sqlite"), "--listen", listen)
        assert res.returncode == 2 and message in res.stderr, res.stderr


def test_oomguard_ui_with_a_token_asks_for_it_once(tmp_path: Path) -> None:
    token = "ui-token-for-tests-0123456789abc"
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    with oomguard.Runner(store=str(tmp_path / "s.sqlite"), workers=1) as runner:
        job = runner.submit("oomguard.examples:noop", 1)
        job.wait(timeout=60, progress=False)
    with dashboard(tmp_path / "s.sqlite", tmp_path, "--token-file", str(token_file)) as ui:
        assert ui.get("/ui/").headers["location"] == "/ui/login"
        assert "<form" in ui.get("/ui/login").text
        form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": ui.url}
        crowded = httpx.post(
            f"{ui.url}/ui/login", content="a=1&b=2&c=3&d=4&e=5&token=x", headers=form
        )
        assert crowded.status_code == 400
        ok = httpx.post(f"{ui.url}/ui/login", content=f"token={token}", headers=form)
        assert ok.status_code == 303 and "httponly" in ok.headers["set-cookie"].lower()
        page = httpx.get(f"{ui.url}/ui/", cookies=ok.cookies)
        assert page.status_code == 200 and job.id in page.text


def test_keys_in_value_order_and_a_key_proven_unfit_says_so(tmp_path: Path) -> None:
    """Learned estimates listed 5, 40, 200 (not as strings: 200, 40, 5), and a key killed at
    the most one task may get says it needs more memory, not `0B · 0B · 0 samples`."""
    path = tmp_path / "s.sqlite"
    with oomguard.Runner(
        store=str(path), workers=2, isolation="watchdog", worker_memory="96MiB", memory_key="mib"
    ) as runner:
        job = runner.sweep(
            "oomguard.examples:allocate",
            [{"mib": 5, "hold": 0.2}, {"mib": 40, "hold": 0.2}, {"mib": 200, "hold": 0.5}],
        )
        status = job.wait(timeout=120, progress=False)
        assert status["counts"]["failed"] == 1, status
    with dashboard(path, tmp_path) as ui:
        page = ui.get(f"/ui/jobs/{job.id}").text
    table = page[page.index("Learned memory estimates") :]
    keys = re.findall(r"<code>oomguard.examples:allocate\|mib=(\d+)</code>", table)
    assert keys == ["5", "40", "200"], keys
    unfit = table[table.index('<tr class="unfit">') :]
    unfit = unfit[: unfit.index("</tr>")]
    assert "mib=200" in unfit and "needs more memory" in unfit and "killed even at 96MiB" in unfit
    assert "0B" not in unfit
