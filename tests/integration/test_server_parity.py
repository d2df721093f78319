"""Server parity (a real ``oomguard serve`` process, the CLI clients in subprocesses):
the memory and retry options of ``run``, submissions that carry what a spec carries
(checked against the server's limits), programs only from the operator's ``--commands``
file, ``oomguard submit study.toml --server URL``, and retention (``--retention``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from fixtures.polling import wait_for
from fixtures.serve_process import Served, serve
from oomguard.cli.exit_codes import ExitCode
from oomguard.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from conftest import RunCli

pytestmark = pytest.mark.timeout(300)
MIB = 1024**2
ECHO = "import json, sys; print(json.dumps(dict(word=sys.argv[1], n=len(sys.argv[1]))))"


@pytest.fixture
def server(tmp_path: Path) -> Any:
    commands = tmp_path / "commands.toml"
    fail = [sys.executable, "-c", "import sys; sys.exit('no ' + sys.argv[1])", "{word}"]
    commands.write_text(
        f"echo = {json.dumps([sys.executable, '-c', ECHO, '{word}'])}\nfail = {json.dumps(fail)}\n"
    )
    with serve(
        tmp_path,
        "--workers",
        "2",
        "--worker-memory",
        "256MiB",
        "--retries",
        "1",
        "--timeout",
        "30",
        "--max-retries",
        "3",
        "--commands",
        str(commands),
        "--max-tasks-per-worker",
        "50",
        "--worker-oom-score-adj",
        "900",
    ) as served:
        yield served


def _done(served: Served, job_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = httpx.get(f"{served.url}/v1/jobs/{job_id}").json()
        return status if status["state"] not in ("waiting", "running") else None

    result: dict[str, Any] = wait_for(finished, timeout=120, interval=0.1)
    return result


def _rows(served: Served, job_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tasks, attempts) of a job, read from the server's store."""
    store = SqliteStore(str(served.store))
    try:
        db = store.db
        names = ("kind", "state", "memory", "retries", "timeout", "memory_key", "fn")
        tasks = [
            dict(zip(names, r, strict=True))
            for r in db.execute(
                f"SELECT {', '.join(names)} FROM tasks WHERE job_id = ? ORDER BY id", (job_id,)
            )
        ]
        attempts = [
            {"limit_bytes": r[0]}
            for r in db.execute(
                "SELECT a.limit_bytes FROM attempts a JOIN tasks t ON t.id = a.task_id "
                "WHERE t.job_id = ?",
                (job_id,),
            )
        ]
    finally:
        store.close()
    return tasks, attempts


def _post(served: Served, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/jobs", json=body, timeout=30)


def test_a_declared_command_runs_with_spec_fields_within_limits(server: Served) -> None:
    r = _post(
        server,
        {
            "command": "echo",
            "tasks": [{"word": "a b; c"}, {"word": "$(id)"}],
            "fanout": 2,
            "aggregate": "oomguard.examples:mean_of",
            "memory": "64MiB",
            "retries": 2,
            "timeout": 10,
            "memory_key": "word",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["tasks"] == 6  # 2 groups x 2 replicates + 2 aggregations
    status = _done(server, r.json()["job_id"])
    assert status["counts"]["succeeded"] == 6, status
    tasks, attempts = _rows(server, r.json()["job_id"])
    work = [t for t in tasks if t["kind"] == "task"]
    assert len(work) == 4 and all(t["fn"].startswith("cmd:") for t in work)
    assert {(t["memory"], t["retries"], t["timeout"]) for t in work} == {(64 * MIB, 2, 10.0)}
    assert all(t["memory_key"].endswith(('word="a b; c"', 'word="$(id)"')) for t in work)
    assert [t["fn"] for t in tasks if t["kind"] == "aggregate"] == ["oomguard.examples:mean_of"] * 2
    # serve --worker-memory bounds every attempt, as it does for run.
    assert attempts and all(0 < a["limit_bytes"] <= 256 * MIB for a in attempts)


@pytest.mark.parametrize(
    "body,status,words",
    [
        (
            {"command": "rm", "args": {}},
            422,
            "no command named 'rm' on this server (declared: echo, fail)",
        ),
        ({"command": "echo", "args": {}}, 422, "missing argument(s) word of its template"),
        ({"task": "oomguard.examples:noop", "command": "echo"}, 422, "give either task or command"),
        (
            {"command": "echo", "args": {"word": "x"}, "memory": "1GiB"},
            422,
            "is not what one task may get on this server",
        ),
        ({"command": "echo", "args": {"word": "x"}, "memory": "lots"}, 422, "invalid memory size"),
        (
            {"command": "echo", "args": {"word": "x"}, "retries": 4},
            422,
            "retries 4 is more than the 3 this server allows",
        ),
        (
            {"command": "echo", "args": {"word": "x"}, "timeout": 31},
            422,
            "timeout 31 s is more than the 30 s this server allows",
        ),
        (
            {"task": "oomguard.examples:noop", "aggregate": "os:system"},
            422,
            "is not from an allowed task module",
        ),
    ],
)
def test_submissions_past_the_limits_are_refused_and_store_nothing(
    server: Served, body: dict[str, Any], status: int, words: str
) -> None:
    r = _post(server, body)
    assert r.status_code == status, r.text
    assert words in r.text, r.text
    assert httpx.get(f"{server.url}/v1/jobs").json()["jobs"] == []


def test_submit_a_spec_file_to_a_server(server: Served, tmp_path: Path, cli: RunCli) -> None:
    spec = tmp_path / "study.toml"
    spec.write_text(
        'command = "echo"\nreplicates = 2\nworkers = 8\ntask-memory = "32MiB"\n'
        '[grid]\nword = ["x", "yy", "zzz"]\n'
    )
    res = cli("submit", str(spec), "--server", server.url, "--json")
    assert res.returncode == 0, res.stderr
    assert "workers set up a local run" in res.stderr
    job_id = json.loads(res.stdout)["job_id"]
    assert json.loads(res.stdout)["tasks"] == 6
    assert _done(server, job_id)["counts"]["succeeded"] == 6
    tasks, _ = _rows(server, job_id)
    assert {t["memory"] for t in tasks} == {32 * MIB}
    # A program line never goes over the network; a bad spec is refused before sending.
    spec.write_text('cmd = ["rm", "-rf", "{path}"]\nrows = [{path = "/"}]\n')
    res = cli("submit", str(spec), "--server", server.url)
    assert res.returncode == int(ExitCode.USAGE)
    assert "a server runs only the programs its operator declared" in res.stderr
    spec.write_text('command = "echo"\nrow = [{word = "x"}]\n')
    res = cli("submit", str(spec), "--server", server.url)
    assert res.returncode == int(ExitCode.USAGE)
    assert f"{spec}:2: unknown key 'row'" in res.stderr
    assert len(httpx.get(f"{server.url}/v1/jobs").json()["jobs"]) == 1


def test_bad_commands_file_stops_serve(tmp_path: Path, cli: RunCli) -> None:
    commands = tmp_path / "commands.toml"
    commands.write_text('bad = ["prog", "{0}"]\n')
    res = cli(
        "serve",
        "--store",
        str(tmp_path / "s.sqlite"),
        "--commands",
        str(commands),
        "--listen",
        "127.0.0.1:0",
    )
    assert res.returncode == int(ExitCode.USAGE)
    assert "bad: command argument '{0}': {0} is not a parameter name" in res.stderr
    res = cli(
        "serve",
        "--store",
        str(tmp_path / "s.sqlite"),
        "--retention",
        "soon",
        "--listen",
        "127.0.0.1:0",
    )
    assert res.returncode == int(ExitCode.USAGE) and "invalid duration 'soon'" in res.stderr


def test_retention_forgets_finished_jobs(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "1", "--retention", "1s") as served:
        ids = []
        for i in range(5):
            r = _post(served, {"task": "oomguard.examples:noop", "args": {"x": i}, "count": 3})
            assert r.status_code == 201, r.text
            ids.append(r.json()["job_id"])

        def gone_or_done(job_id: str) -> bool:
            # One answer per look: a job may be forgotten between two requests.
            r = httpx.get(f"{served.url}/v1/jobs/{job_id}")
            return r.status_code == 404 or r.json()["state"] == "succeeded"

        for job_id in ids:  # each finishes, or is already forgotten (404)
            wait_for(lambda j=job_id: gone_or_done(j), timeout=60, interval=0.1)

        def empty() -> bool:
            return bool(httpx.get(f"{served.url}/v1/jobs").json()["jobs"] == [])

        wait_for(empty, timeout=60, interval=0.2)
        metrics = httpx.get(f"{served.url}/metrics").text
        (line,) = [
            x
            for x in metrics.splitlines()
            if x.startswith('oomguard_retention_deleted_total{kind="jobs"}')
        ]
        assert float(line.split()[-1]) == 5
        store = SqliteStore(str(served.store))
        try:
            counts = store.db.execute(
                "SELECT (SELECT COUNT(*) FROM tasks), (SELECT COUNT(*) FROM attempts), "
                "(SELECT COUNT(*) FROM results), (SELECT COUNT(*) FROM events "
                "WHERE job_id IS NOT NULL)"
            ).fetchone()
        finally:
            store.close()
        assert tuple(counts) == (0, 0, 0, 0)


def test_a_failing_command_is_an_error_with_its_stderr(server: Served) -> None:
    r = _post(server, {"command": "fail", "args": {"word": "luck"}})
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    status = _done(server, job_id)
    assert status["failures_by_class"] == {"error": 2}, status  # serve --retries 1
    (task,) = httpx.get(f"{server.url}/v1/jobs/{job_id}/tasks").json()["tasks"]
    assert task["failure_class"] == "error"
    assert "command exited with status 1; stderr: no luck" in task["error"]
    # Metrics name a command by its program, not by its whole template.
    program = Path(sys.executable).name
    metrics = httpx.get(f"{server.url}/metrics").text
    assert (
        f'oomguard_attempt_failures_total{{class="error",function="cmd:{program}"}} 2.0' in metrics
    ), metrics


def test_a_spec_whose_task_is_a_file_is_refused_before_any_request(
    tmp_path: Path, cli: RunCli
) -> None:
    """The README's study names sweep.py:simulate: a server imports no file, and says so
    before anything is sent (port 9: a request would fail as a connection error)."""
    import shutil

    from conftest import ROOT

    for name in ("study.toml", "sweep.py"):
        shutil.copy(ROOT / "examples" / name, tmp_path / name)
    res = cli("submit", "study.toml", "--server", "http://127.0.0.1:9", cwd=tmp_path)
    assert res.returncode == int(ExitCode.USAGE), res.stderr
    told = res.stderr
    assert "names a file, and a server imports no file sent to it" in told
    assert "--tasks-module sweep" in told and 'task = "sweep:simulate"' in told
    assert "oomguard run study.toml" in told


def test_a_refused_field_is_told_in_words_not_as_a_regex(server: Served) -> None:
    r = _post(server, {"task": "/home/me/sweep.py:simulate", "args": {}})
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "task: must be module:function" in message, message
    assert "--tasks-module" in message and "^[" not in r.text
    r = _post(server, {"task": "sweep.py:simulate", "args": {}})  # a module's name
    assert r.status_code == 422, r.text
    assert "(serve --tasks-module MODULE)" in r.json()["error"]["message"]
    r = _post(server, {"command": "rm -rf", "args": {}})
    assert r.status_code == 422 and "a program the server's operator declared" in r.text


def test_status_server_tells_what_status_store_tells(server: Served, cli: RunCli) -> None:
    r = _post(
        server,
        {
            "task": "oomguard.examples:fail",
            "tasks": [{"message": "no luck"}, {"message": "bad day"}],
        },
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    assert _done(server, job_id)["state"] == "failed"
    remote = cli("status", job_id, "--server", server.url)
    local = cli("status", job_id, "--store", str(server.store))
    assert remote.returncode == int(ExitCode.TASKS_FAILED), remote.stderr
    assert remote.stdout == local.stdout  # one renderer, the same facts
    assert "failed for good: 2 tasks, by class and key:" in remote.stdout
    assert "RuntimeError: no luck" in remote.stdout or "no luck" in remote.stdout
    assert "to change: fix the task" in remote.stdout
