"""The agent's reader and cursor on saved /dev/kmsg records (a file standing in for the
device): each kill once, in order, with its first record's sequence number; a restart
from the cursor repeats nothing and misses nothing; a first start reports --lookback only;
the rate limit holds a crash loop to one notice a minute, counted."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from oomguard.agent.channels import body_of
from oomguard.agent.cursor import Cursor, boot_id, load_cursor, save_cursor
from oomguard.agent.ratelimit import RateLimiter
from oomguard.agent.reader import KillReader, KmsgSource, LogSource
from oomguard.agent.report import KillReport
from oomguard.agent.service import Agent, AgentConfig
from oomguard.errors import ConfigError

REPORT = (
    Path(__file__).resolve().parent.parent
    / "fixtures"
    / "oom_reports"
    / ("local_memcg_v1_kmsg_6.18.log")
)


def _report(n: int) -> str:
    """The recorded report, its seqs, times and pid moved so that copy ``n`` is new."""
    out = []
    for line in REPORT.read_text().splitlines():
        m = re.match(r"^(\d+),(\d+),(\d+),([^;]*);(.*)$", line)
        if m is None:
            out.append(line)
            continue
        text = m.group(5).replace("3128", str(4000 + n))
        seq = int(m.group(2)) + 1000 * n
        usec = int(m.group(3)) + 10_000_000 * n
        out.append(f"{m.group(1)},{seq},{usec},{m.group(4)};{text}")
    return "\n".join(out) + "\n"


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.sent: list[tuple[KillReport, int]] = []

    def send(self, report: KillReport, suppressed: int) -> bool:
        self.sent.append((report, suppressed))
        return True

    def close(self) -> None:
        pass


def _run(
    log: Path, state: Path | None, *, lookback: float = 1e9, until: int = 0, rate: float = 0.0
) -> Recorder:
    """Run an agent over ``log`` until ``until`` reports came and the log was read."""
    recorder = Recorder()

    def open_log(spec: str) -> LogSource:
        return KmsgSource(str(log))

    agent = Agent(
        AgentConfig(state=state, lookback_s=lookback, rate_limit_s=rate),
        channels=[recorder],
        open_log=open_log,
    )
    thread = threading.Thread(target=agent.run)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if len(recorder.sent) >= until and agent.health.lines_read and not agent_busy(agent):
            break
        time.sleep(0.05)
    time.sleep(0.6)  # past the settle time: nothing more is coming
    agent.stop()
    thread.join(5)
    assert not thread.is_alive()
    return recorder


def agent_busy(agent: Agent) -> bool:
    return agent.health.last_line_at is not None and time.time() - agent.health.last_line_at < 0.5


def test_each_kill_once_with_its_sequence_number(tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    log.write_text(_report(1) + _report(2))
    reader = KillReader(KmsgSource(str(log)))
    kills = reader.poll()
    assert len(kills) == 1  # the second report is held until the log is quiet
    time.sleep(0.3)
    kills += reader.poll()
    reader.close()
    assert [k.event.victim_pid for k in kills] == [4001, 4002]
    assert [k.seq for k in kills] == [1344, 2344]  # the "invoked oom-killer" records
    assert kills[0].stamp == pytest.approx(200.933863)


def test_a_restart_repeats_nothing_and_misses_nothing(tmp_path: Path) -> None:
    log, state = tmp_path / "kmsg", tmp_path / "cursor.json"
    log.write_text(_report(1) + _report(2))
    first = _run(log, state, until=2)
    assert [r.event.victim_pid for r, _ in first.sent] == [4001, 4002]
    assert load_cursor(state) == Cursor(boot_id(), 2344, pytest.approx(210.933863))  # type: ignore[arg-type]  # equal to a float
    assert _run(log, state).sent == []  # nothing repeated
    with log.open("a") as handle:  # killed while the agent was stopped
        handle.write(_report(3))
    again = _run(log, state, until=1)
    assert [r.event.victim_pid for r, _ in again.sent] == [4003]
    assert _run(log, state).sent == []


def test_a_first_start_reports_the_lookback_only(tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    log.write_text(_report(1))  # 200 s after boot: long before the last minute
    assert _run(log, None, lookback=60).sent == []
    assert len(_run(log, None, lookback=1e9, until=1).sent) == 1


def test_a_cursor_of_another_boot_is_stale_and_a_bad_one_an_error(tmp_path: Path) -> None:
    log, state = tmp_path / "kmsg", tmp_path / "cursor.json"
    log.write_text(_report(1))
    save_cursor(state, Cursor("another-boot", 99999, 99999.0))
    assert len(_run(log, state, until=1).sent) == 1
    state.write_text("{not json")
    with pytest.raises(ConfigError, match="not an agent cursor"):
        load_cursor(state)
    assert not list(tmp_path.glob(".cursor-*"))  # no temporary file left behind


def test_the_rate_limit_holds_a_crash_loop_and_counts_it(tmp_path: Path) -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    decisions = []
    for t in (0, 10, 20, 59, 61, 62, 200):
        now[0] = t
        decisions.append(limiter.decide("pod/x/"))
    assert [(d.send, d.suppressed) for d in decisions] == [
        (True, 0),
        (False, 1),
        (False, 2),
        (False, 3),
        (True, 3),
        (False, 1),
        (True, 1),
    ]
    assert limiter.decide("pod/y/").send  # another workload is not held

    log = tmp_path / "kmsg"
    log.write_text(_report(1) + _report(2) + _report(3))  # the same cgroup, three kills
    recorder = _run(log, None, until=1, rate=60)
    assert len(recorder.sent) == 1
    body = body_of(recorder.sent[0][0], 2, "x")
    assert body["suppressed"] == 2 and "+2 more" in str(body["text"])
    json.dumps(body)


def test_a_journal_export_is_read_and_its_cursor_is_the_time_since_boot(tmp_path: Path) -> None:
    from oomguard.agent.reader import FileSource

    journal = REPORT.parent / "local_memcg_v1_journal_json_6.18.log"
    state = tmp_path / "cursor.json"
    recorder = Recorder()
    agent = Agent(
        AgentConfig(state=state, lookback_s=1e9, rate_limit_s=0),
        channels=[recorder],
        open_log=lambda spec: FileSource(str(journal)),
    )
    thread = threading.Thread(target=agent.run)
    thread.start()
    deadline = time.monotonic() + 10
    while not recorder.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    agent.stop()
    thread.join(5)
    ((report, _),) = recorder.sent
    assert (report.event.victim_pid, report.seq) == (3128, None)
    cursor = load_cursor(state)
    assert cursor is not None and cursor.seq is None
    assert cursor.stamp == pytest.approx(190.933863)
    again = Recorder()
    agent = Agent(
        AgentConfig(state=state, lookback_s=1e9, rate_limit_s=0),
        channels=[again],
        open_log=lambda spec: FileSource(str(journal)),
    )
    thread = threading.Thread(target=agent.run)
    thread.start()
    time.sleep(1.0)
    agent.stop()
    thread.join(5)
    assert again.sent == []


def test_a_group_kill_names_every_member_and_its_cgroup() -> None:
    from oomguard.agent.attribution import NoPodNames
    from oomguard.agent.reader import SeenKill
    from oomguard.agent.report import Role, build_report
    from oomguard.kernlog import parse_text

    events = parse_text((REPORT.parent / "synth_oom_group_v2_6.x.log").read_text())
    reports = [
        build_report(
            SeenKill(e, None, e.timestamp), NoPodNames(), cgroup_root=Path("/nonexistent"), node="n"
        )
        for e in events
    ]
    assert [r.event.victim_pid for r in reports] == [5001, 5002, 5000]
    assert all(r.fields()["group_kill"] is True for r in reports)
    assert {r.workload.unit for r in reports} == {"job-1.scope"}
    assert all(r.trigger_cgroup == "/job.slice/job-1.scope" for r in reports)
    assert {r.role for r in reports} == {Role.UNKNOWN}
