"""Several ``oomguard serve --replica`` processes on one store (issue 29): they share the
work, take over a replica that dies (SIGKILL) or goes silent (SIGSTOP past its lease), and
a replica taken over records nothing more (fencing). Real servers, real workers, one real
store: each test runs on a SQLite file and on a PostgreSQL database of the throwaway cluster
(tests/fixtures/postgres.py); the store is read with plain SQL to count what happened."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import oomguard
from fixtures.polling import wait_for
from fixtures.postgres import PORT as PG_PORT
from fixtures.postgres import Cluster
from fixtures.serve_process import Served, serve
from fixtures.tcp_proxy import proxy_to
from oomguard.cli.exit_codes import ExitCode
from oomguard.errors import StoreBusyError
from oomguard.store.location import is_url
from oomguard.store.postgres.dialect import translate

pytestmark = pytest.mark.timeout(300)

#: a short lease, so the tests see takeovers within seconds (heartbeats every third)
LEASE = "3"


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The replicas' store: ``serve.sqlite`` in ``tmp_path``, or a fresh PostgreSQL
    database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "serve.sqlite")


@contextmanager
def replicas(tmp_path: Path, location: str, n: int, *args: str) -> Iterator[list[Served]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                serve(
                    tmp_path,
                    "--replica",
                    "--lease-ttl",
                    LEASE,
                    *args,
                    name=f"replica{i}",
                    location=location,
                )
            )
            for i in range(n)
        ]


def _small_window(tmp_path: Path) -> tuple[str, str]:
    """``--config`` with a window of 4 tasks: each replica claims a few at a time, so both
    run some of a job submitted to one (on PostgreSQL the other is woken by its NOTIFY at
    once and, with the default window of 2,000, may claim the whole job first)."""
    config = tmp_path / "window.toml"
    config.write_text("window = 4\n")
    return ("--config", str(config))


def _rows(store: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (SQLite's dialect, ``?`` placeholders) in the store at ``store``."""
    if is_url(store):
        import psycopg

        with psycopg.connect(store, autocommit=True) as conn:
            return [tuple(r) for r in conn.execute(translate(sql), params).fetchall()]
    db = sqlite3.connect(store, timeout=30)
    try:
        return [tuple(r) for r in db.execute(sql, params)]
    finally:
        db.close()


def _scheduler_of(store: str, pid: int) -> str:
    rows = _rows(store, "SELECT id FROM schedulers WHERE pid = ?", pid)
    assert len(rows) == 1, rows
    return str(rows[0][0])


def _submit(server: Served, task: str, count: int, args: dict[str, object]) -> str:
    r = httpx.post(
        f"{server.url}/v1/jobs", json={"task": task, "count": count, "args": args}, timeout=60
    )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["job_id"])


def _done(server: Served, job_ids: list[str]) -> bool:
    for job_id in job_ids:
        status = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=30).json()
        if status["state"] not in ("succeeded", "failed", "cancelled"):
            return False
    return True


def _exactly_once(store: str, tasks: int) -> None:
    """Every task succeeded, with one result and one succeeded attempt; nothing discarded
    as a duplicate."""
    assert _rows(store, "SELECT COUNT(*) FROM tasks WHERE state != 'succeeded'") == [(0,)]
    assert _rows(store, "SELECT COUNT(*) FROM tasks") == [(tasks,)]
    assert _rows(store, "SELECT COUNT(*) FROM results") == [(tasks,)]
    twice = _rows(
        store,
        "SELECT task_id FROM attempts WHERE state = 'succeeded' GROUP BY task_id "
        "HAVING COUNT(*) > 1",
    )
    assert twice == []
    # Each result is its succeeded attempt's.
    assert _rows(
        store,
        "SELECT COUNT(*) FROM results r JOIN attempts a ON a.id = r.attempt_id "
        "WHERE a.state = 'succeeded' AND a.task_id = r.task_id",
    ) == [(tasks,)]
    assert _rows(store, "SELECT value FROM counters WHERE name = 'duplicate_results'") in (
        [],
        [(0,)],
    )


def test_two_replicas_share_the_work_exactly_once(tmp_path: Path, location: str) -> None:
    with replicas(tmp_path, location, 2, "--workers", "2") as (a, b):
        jobs = []
        for i in range(8):  # 8 jobs of 40, submitted to each replica in turn
            jobs.append(_submit((a, b)[i % 2], "oomguard.examples:noop", 40, {"x": i}))
        wait_for(lambda: _done(a, jobs), timeout=240, interval=0.2, what="all jobs done")
        store = a.location
        _exactly_once(store, 320)
        ran = dict(
            _rows(
                store,
                "SELECT scheduler_id, COUNT(*) FROM attempts WHERE state = 'succeeded' "
                "GROUP BY scheduler_id",
            )
        )
        assert set(ran) == {_scheduler_of(store, a.pid), _scheduler_of(store, b.pid)}, ran
        # Attempt ids come from disjoint blocks: no two attempts share one.
        assert _rows(store, "SELECT COUNT(*) = COUNT(DISTINCT id) FROM attempts") == [(1,)]
        # Both answer /healthz while they live.
        for server in (a, b):
            assert httpx.get(f"{server.url}/healthz").status_code == 200


def _running_attempts(store: str, scheduler_id: str) -> int:
    rows = _rows(
        store,
        "SELECT COUNT(*) FROM attempts WHERE scheduler_id = ? AND state = 'running'",
        scheduler_id,
    )
    return int(rows[0][0])


def test_a_replica_killed_has_its_attempts_lost_and_run_by_the_other(
    tmp_path: Path, location: str
) -> None:
    args = ("--workers", "2", *_small_window(tmp_path))
    with replicas(tmp_path, location, 2, *args) as (a, b):
        store = a.location
        dead = _scheduler_of(store, a.pid)
        alive = _scheduler_of(store, b.pid)
        job = _submit(a, "oomguard.examples:sleep", 30, {"seconds": 0.5})
        wait_for(lambda: _running_attempts(store, dead) > 0, timeout=120, what="a running")
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        # The other replica finds it dead (its process is gone) at its next heartbeat.
        wait_for(
            lambda: (
                _rows(store, "SELECT taken_over_by FROM schedulers WHERE id = ?", dead)
                == [(alive,)]
            ),
            timeout=60,
            what="the dead replica taken over",
        )
        wait_for(lambda: _done(b, [job]), timeout=240, interval=0.2, what="the job done")
        _exactly_once(store, 30)
        lost = _rows(
            store,
            "SELECT task_id, failure_class, evidence FROM attempts WHERE scheduler_id = ? "
            "AND state = 'failed'",
            dead,
        )
        assert lost, "the killed replica had attempts running"
        assert _rows(
            store,
            "SELECT COUNT(*) FROM attempts WHERE scheduler_id = ? AND state = 'running'",
            dead,
        ) == [(0,)]
        for task_id, failure_class, evidence in lost:
            assert failure_class == "lost"
            assert json.loads(str(evidence))["scheduler_id"] == dead
            # ... and retried by the live replica, which ran it to success.
            assert _rows(
                store,
                "SELECT scheduler_id FROM attempts WHERE task_id = ? AND state = 'succeeded'",
                task_id,
            ) == [(alive,)]


def test_a_replica_silent_past_its_lease_is_taken_over_and_fenced(
    tmp_path: Path, location: str
) -> None:
    args = ("--workers", "2", *_small_window(tmp_path))
    with replicas(tmp_path, location, 2, *args) as (a, b):
        store = a.location
        silent = _scheduler_of(store, a.pid)
        alive = _scheduler_of(store, b.pid)
        job = _submit(a, "oomguard.examples:sleep", 30, {"seconds": 0.5})
        wait_for(lambda: _running_attempts(store, silent) > 0, timeout=120, what="a running")
        os.kill(a.pid, signal.SIGSTOP)  # alive, but silent: a partition
        try:
            wait_for(
                lambda: (
                    _rows(store, "SELECT taken_over_by FROM schedulers WHERE id = ?", silent)
                    == [(alive,)]
                ),
                timeout=60,
                what="the silent replica taken over",
            )
        finally:
            os.kill(a.pid, signal.SIGCONT)
        # It finds it was taken over and exits 13 (its supervisor restarts it).
        assert a.proc.wait(120) == ExitCode.SCHEDULER_DIED, a.output()
        assert "was taken over" in a.output(), a.output()
        wait_for(lambda: _done(b, [job]), timeout=240, interval=0.2, what="the job done")
        _exactly_once(store, 30)
        ((taken_at,),) = _rows(store, "SELECT taken_over_at FROM schedulers WHERE id = ?", silent)
        # Nothing of it recorded after the takeover: no attempt started, none ended by it.
        assert _rows(
            store,
            "SELECT COUNT(*) FROM attempts WHERE scheduler_id = ? AND "
            "(started_at > ? OR state = 'running')",
            silent,
            taken_at,
        ) == [(0,)]
        taken = _rows(
            store,
            "SELECT id, state, failure_class FROM attempts WHERE scheduler_id = ? AND ended_at = ?",
            silent,
            taken_at,
        )
        assert taken and all(t[1:] == ("failed", "lost") for t in taken), taken
        # What it still tried to record was refused and counted, in the store and /metrics.
        fenced = _rows(store, "SELECT value FROM counters WHERE name = 'fenced_writes'")
        count = fenced[0][0] if fenced else 0
        wait_for(
            lambda: (
                f"oomguard_fenced_writes_total {float(count)}" in httpx.get(f"{b.url}/metrics").text
            ),
            timeout=30,
            what="the fenced writes in /metrics",
        )
        assert _rows(store, "SELECT COUNT(*) FROM events WHERE kind = 'scheduler_taken_over'") == [
            (1,)
        ]
        # None of the attempts taken over has a result; each task's result is the live one's.
        assert _rows(
            store,
            "SELECT COUNT(*) FROM results WHERE attempt_id IN "
            "(SELECT id FROM attempts WHERE scheduler_id = ? AND ended_at = ?)",
            silent,
            taken_at,
        ) == [(0,)]


def test_quotas_hold_across_replicas_under_racing_submissions(
    tmp_path: Path, location: str
) -> None:
    limits = ("--max-pending-tasks", "50", "--namespace-quota", "team=30", "--workers", "1")
    with replicas(tmp_path, location, 2, *limits) as servers:
        accepted = {"team": 0, "default": 0}
        refused: list[str] = []
        lock = threading.Lock()

        def submit(namespace: str, first: int) -> None:
            with httpx.Client(timeout=60) as client:
                for i in range(16):
                    server = servers[(first + i) % 2]
                    r = client.post(
                        f"{server.url}/v1/jobs",
                        json={
                            "task": "oomguard.examples:sleep",
                            "count": 5,
                            "args": {"seconds": 120},
                            "namespace": namespace,
                        },
                    )
                    with lock:
                        if r.status_code == 201:
                            accepted[namespace] += 5
                        else:
                            assert r.status_code == 429, r.text
                            refused.append(r.json()["error"]["code"])

        threads = [
            threading.Thread(target=submit, args=(ns, first))
            for ns in ("team", "default")
            for first in (0, 1)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert refused, "the submissions never reached a limit"
        assert set(refused) <= {"queue_full", "namespace_quota"}, refused
        assert accepted["team"] <= 30 and sum(accepted.values()) <= 50, accepted
        # The store agrees: no more open tasks than the limits (they sleep for minutes).
        store = servers[0].location
        open_states = "('pending', 'ready', 'queued', 'running')"
        ((total,),) = _rows(store, f"SELECT COUNT(*) FROM tasks WHERE state IN {open_states}")
        ((team,),) = _rows(
            store,
            "SELECT COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id "
            f"WHERE t.state IN {open_states} AND j.namespace = 'team'",
        )
        assert total == sum(accepted.values()) and team == accepted["team"]


def test_max_namespaces_holds_across_replicas(tmp_path: Path, location: str) -> None:
    """Each replica sees the namespaces of the other's pending tasks: with room for two,
    a third namespace is refused whichever replica it goes to, a namespace with a quota of
    its own is not counted, and a namespace already pending is still taken."""
    limits = ("--max-namespaces", "2", "--namespace-quota", "vip=100", "--workers", "1")
    with replicas(tmp_path, location, 2, *limits) as (a, b):

        def post(server: Served, namespace: str) -> httpx.Response:
            return httpx.post(
                f"{server.url}/v1/jobs",
                json={
                    "task": "oomguard.examples:sleep",
                    "count": 1,
                    "args": {"seconds": 120},
                    "namespace": namespace,
                },
                timeout=60,
            )

        assert post(a, "one").status_code == 201
        assert post(b, "two").status_code == 201
        for server in (a, b):
            refused = post(server, "three")
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_namespaces"
        assert post(a, "two").status_code == 201  # pending already: still taken
        assert post(b, "vip").status_code == 201  # its own quota: not counted


def test_a_lock_is_held_by_one_replica_at_a_time(tmp_path: Path, location: str) -> None:
    logs = tmp_path / "locked"
    logs.mkdir()
    args = ("--workers", "2", "--tasks-module", "fixtures.tasks", *_small_window(tmp_path))
    with replicas(tmp_path, location, 2, *args) as (a, b):
        jobs = []
        for i in range(4):  # one lock key, tasks of it submitted to both replicas
            r = httpx.post(
                f"{(a, b)[i % 2].url}/v1/jobs",
                json={
                    "task": "fixtures.tasks:locked",
                    "tasks": [{"x": 10 * i + k} for k in range(5)],
                    "args": {"account": "one", "log_dir": str(logs), "seconds": 0.05},
                },
                timeout=60,
            )
            assert r.status_code == 201, r.text
            jobs.append(str(r.json()["job_id"]))
        wait_for(lambda: _done(a, jobs), timeout=240, interval=0.2, what="all jobs done")
        _exactly_once(a.location, 20)
        ran = _rows(a.location, "SELECT DISTINCT scheduler_id FROM attempts")
        assert len(ran) == 2, ran  # both replicas ran some
    spans = []
    for log in logs.iterdir():
        if log.suffix == ".pid":
            continue
        lines = log.read_text().split()
        spans.append((float(lines[0]), float(lines[3])))
    spans.sort()
    assert len(spans) == 20
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two tasks of one lock ran at once"


def test_runners_as_replicas_share_a_store_and_exclusive_ones_refuse(
    tmp_path: Path, location: str
) -> None:
    store = str(tmp_path / "s.sqlite") if not is_url(location) else location
    with (
        oomguard.Runner(store=store, workers=1, replica=True) as one,
        oomguard.Runner(store=store, workers=1, replica=True) as two,
    ):
        alone = oomguard.Runner(store=store, workers=1)
        with pytest.raises(StoreBusyError):
            alone.start()
        alone.close()
        job = one.sweep("oomguard.examples:noop", [{"x": i} for i in range(20)])
        status = two.job(job.id).wait(timeout=120)
        assert status["counts"]["succeeded"] == 20, status


#: the chaos test's tasks (of 20 ms) and kills
TASKS = 2000
KILLS = 3


def _submit_many(server: Served) -> list[str]:
    jobs = []
    for i in range(4):  # 4 jobs of 500 sleeps of 20 ms
        r = httpx.post(
            f"{server.url}/v1/jobs",
            json={
                "task": "oomguard.examples:sleep",
                "tasks": [{"seconds": 0.02} for _ in range(TASKS // 4)],
                "name": f"chaos{i}",
            },
            timeout=120,
        )
        assert r.status_code == 201, r.text
        jobs.append(str(r.json()["job_id"]))
    return jobs


@pytest.mark.slow
def test_a_replica_killed_three_times_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, postgres_url: str
) -> None:
    """Chaos on PostgreSQL: two replicas share 2,000 tasks of 20 ms while one is killed
    with SIGKILL three times and started again each time. Every task done exactly once;
    each killed replica taken over by the live one, its running attempts ended ``lost``
    with evidence naming it, each task it lost run again to success by a live replica
    after the takeover. From the store's schedulers, attempts, results and events. Costly
    (real servers, 2,000 tasks, three restarts: about a minute here): marked ``slow``."""
    store = postgres_url
    # A small window (the default takes 2,000 tasks at once): each replica, the restarted
    # one too, finds tasks still ready to claim.
    config = tmp_path / "oomguard.toml"
    config.write_text("window = 20\n")
    args = ("--replica", "--lease-ttl", LEASE, "--workers", "3", "--config", str(config))
    with ExitStack() as stack:
        live = stack.enter_context(serve(tmp_path, *args, name="live", location=store))
        alive = _scheduler_of(store, live.pid)
        victim = stack.enter_context(serve(tmp_path, *args, name="victim0", location=store))
        jobs = _submit_many(live)
        killed: list[str] = []
        for n in range(KILLS):
            dead = _scheduler_of(store, victim.pid)
            wait_for(
                lambda dead=dead: _running_attempts(store, dead) > 0,
                timeout=120,
                interval=0.01,
                what=f"the victim ({dead}) running attempts",
            )
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            killed.append(dead)
            wait_for(
                lambda dead=dead: (
                    _rows(store, "SELECT taken_over_by FROM schedulers WHERE id = ?", dead)
                    == [(alive,)]
                ),
                timeout=60,
                what=f"the killed victim ({dead}) taken over",
            )
            victim = stack.enter_context(
                serve(tmp_path, *args, name=f"victim{n + 1}", location=store)
            )
        wait_for(lambda: _done(live, jobs), timeout=240, interval=0.2, what="all jobs done")
        _exactly_once(store, TASKS)
        assert _rows(store, "SELECT COUNT(*) FROM attempts WHERE state = 'running'") == [(0,)]
        for dead in killed:
            ((taken_at, by, heartbeat),) = _rows(
                store,
                "SELECT taken_over_at, taken_over_by, heartbeat FROM schedulers WHERE id = ?",
                dead,
            )
            assert by == alive
            lost = _rows(
                store,
                "SELECT id, task_id, state, failure_class, evidence, ended_at FROM attempts "
                "WHERE scheduler_id = ? AND (failure_class = 'lost' OR ended_at = ?)",
                dead,
                taken_at,
            )
            assert lost, f"{dead} had attempts running when it was killed"
            for _id, task_id, state, failure_class, evidence, ended_at in lost:
                assert (state, failure_class, ended_at) == ("failed", "lost", taken_at)
                assert json.loads(str(evidence))["scheduler_id"] == dead
                # Retried by a live replica (not the dead one), after the takeover.
                ((runner, started),) = _rows(
                    store,
                    "SELECT scheduler_id, started_at FROM attempts WHERE task_id = ? AND "
                    "state = 'succeeded'",
                    task_id,
                )
                assert runner != dead and started >= taken_at
            events = _rows(
                store,
                "SELECT data FROM events WHERE kind = 'scheduler_taken_over'",
            )
            mine = [
                json.loads(str(d)) for (d,) in events if json.loads(str(d))["scheduler_id"] == dead
            ]
            assert len(mine) == 1 and mine[0]["by"] == alive and mine[0]["lost"] == len(lost)
            print(
                f"{dead}: {len(lost)} lost, taken over {taken_at - heartbeat:.2f}s after its "
                f"last heartbeat (lease {LEASE}s)"
            )


def test_a_replica_cut_from_postgresql_stops_and_is_taken_over(
    tmp_path: Path, postgres_cluster: Cluster
) -> None:
    """A replica whose connection to PostgreSQL is cut (through a TCP proxy that closes its
    connections and refuses new ones) stops at its next statement: it records nothing more
    and exits 13 for its supervisor (the store does not reconnect). The other replica takes
    it over: the attempts it was running end lost, with no result, and run again; started
    again through the proxy once it is back, it registers anew. Every result exactly once."""
    direct = postgres_cluster.create_database()
    database = direct.split("?")[0].rsplit("/", 1)[1]
    socket_path = postgres_cluster.socket_dir / f".s.PGSQL.{PG_PORT}"
    with proxy_to(socket_path) as proxy, ExitStack() as stack:
        through = f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}"
        config = tmp_path / "oomguard.toml"
        config.write_text("window = 4\n")  # both replicas find tasks to claim
        args = ("--replica", "--lease-ttl", LEASE, "--workers", "2", "--config", str(config))
        live = stack.enter_context(serve(tmp_path, *args, name="live", location=direct))
        cut = stack.enter_context(serve(tmp_path, *args, name="cut", location=through))
        alive, gone = _scheduler_of(direct, live.pid), _scheduler_of(direct, cut.pid)
        job = _submit(cut, "oomguard.examples:sleep", 30, {"seconds": 0.5})
        wait_for(lambda: _running_attempts(direct, gone) > 0, timeout=120, what="a running")
        proxy.cut()
        assert cut.proc.wait(120) == ExitCode.SCHEDULER_DIED, cut.output()
        assert "cannot be used now" in cut.output(), cut.output()
        wait_for(
            lambda: (
                _rows(direct, "SELECT taken_over_by FROM schedulers WHERE id = ?", gone)
                == [(alive,)]
            ),
            timeout=60,
            what="the cut replica taken over",
        )
        proxy.restore()
        again = stack.enter_context(serve(tmp_path, *args, name="again", location=through))
        assert _scheduler_of(direct, again.pid) not in (alive, gone)
        wait_for(lambda: _done(live, [job]), timeout=240, interval=0.2, what="the job done")
        _exactly_once(direct, 30)
        ((taken_at,),) = _rows(direct, "SELECT taken_over_at FROM schedulers WHERE id = ?", gone)
        # Nothing of it after the takeover: no attempt started or still running, no task
        # its own; the attempts taken over ended lost, with no result.
        assert _rows(
            direct,
            "SELECT COUNT(*) FROM attempts WHERE scheduler_id = ? AND "
            "(started_at > ? OR state = 'running')",
            gone,
            taken_at,
        ) == [(0,)]
        assert _rows(direct, "SELECT COUNT(*) FROM tasks WHERE owner = ?", gone) == [(0,)]
        taken = _rows(
            direct,
            "SELECT state, failure_class FROM attempts WHERE scheduler_id = ? AND ended_at = ?",
            gone,
            taken_at,
        )
        assert taken and all(t == ("failed", "lost") for t in taken), taken
        assert _rows(
            direct,
            "SELECT COUNT(*) FROM results WHERE attempt_id IN "
            "(SELECT id FROM attempts WHERE scheduler_id = ? AND ended_at = ?)",
            gone,
            taken_at,
        ) == [(0,)]
