"""Kernel OOM report parsing: the corpus of real reports, and each format rule."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest

from oomguard.errors import KernelLogUnavailable
from oomguard.kernlog import (
    JSON_KEYS,
    KernelLogFollower,
    OomEvent,
    OomLogParser,
    iter_source_lines,
    kmsg,
    normalize_line,
    parse_lines,
    parse_text,
    sources,
)

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "oom_reports"
CASES = sorted(p.name[: -len(".log")] for p in CORPUS.glob("*.log"))


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 45
    for name in CASES:
        assert (CORPUS / f"{name}.expected.jsonl").exists(), name


def test_corpus_sources_name_real_cases() -> None:
    listed = re.findall(r"^\| `([^`]+)` \|", (CORPUS / "SOURCES.md").read_text(), re.M)
    assert len(listed) >= 30
    assert sorted(set(listed) - set(CASES)) == []


@pytest.mark.parametrize("name", CASES)
def test_corpus(name: str) -> None:
    text = (CORPUS / f"{name}.log").read_text(encoding="utf-8")
    expected = [
        json.loads(line)
        for line in (CORPUS / f"{name}.expected.jsonl").read_text().splitlines()
        if line.strip()
    ]
    got = [e.to_json() for e in parse_text(text)]
    assert got == expected


def test_to_json_has_exactly_the_documented_keys() -> None:
    event = parse_text(
        "[ 1.5] Out of memory: Killed process 7 (a) total-vm:1kB, anon-rss:2kB, "
        "file-rss:3kB, shmem-rss:4kB, UID:5 pgtables:6kB oom_score_adj:-7"
    )[0]
    data = event.to_json()
    assert tuple(data) == JSON_KEYS
    assert "lines" not in data
    assert data["oom_score_adj"] == -7 and data["uid"] == 5 and data["pgtables_kb"] == 6
    assert event.rss_kb == 9
    json.dumps(data)


@pytest.mark.parametrize(
    ("line", "text", "stamp"),
    [
        ("[  190.933863] python invoked", "python invoked", 190.933863),
        ("4,344,190933863,-;python invoked", "python invoked", 190.933863),
        ("[Mon Nov 23 18:09:24 2026] python invoked", "python invoked", None),
        ("Nov 23 18:09:24 host kernel: [   12.5] x y", "x y", 12.5),
        ("Nov  3 18:09:24 host kernel: x y", "x y", None),
        ("2024-05-01T10:00:00.123456+00:00 host kernel: x", "x", None),
        ("[  190.933863] [ T3128] python invoked", "python invoked", 190.933863),
        ("<4>[   5.000001] x", "x", 5.000001),
        ("kern  :err   : [    1.000000] x", "x", 1.0),
        ("6,1,5,-;tab\\x09here", "tab\there", 0.000005),
        # journalctl -o short-precise, short-iso, short-full, short-unix, short-monotonic
        ("May 15 23:09:27.123456 host kernel: x", "x", None),
        ("2023-05-15T23:09:27+0000 host kernel: x", "x", None),
        ("Mon 2023-05-15 23:09:27 UTC host kernel: x", "x", None),
        ("1684192167.123456 host kernel: x", "x", None),
        ("[  514.682838] host kernel: x", "x", 514.682838),
        # syslog with a localised month, tabs, a facility, quoted or indented in a paste
        ("апр 28 01:23:30 PC kernel: x", "x", None),
        ("Jan\t5 02:12:02 host kernel:\t[ 12.5] x", "x", 12.5),
        ("Jun 10 12:00:00 host kern.warn kernel: x", "x", None),
        ("> Mar  9 18:14:14 h kernel: [295692.212094] x", "x", 295692.212094),
        ("    Aug  1 14:20:36 h kernel: [  601.273226] x", "x", 601.273226),
        ("<6>1 2024-05-01T10:00:00.1+00:00 host kernel - - - [  12.5] x", "x", 12.5),
        # dmesg -d, -H / -e, --time-format=delta, a stamp whose "[" was cut off
        ("[  123.456789 <    0.000123>] x", "x", 123.456789),
        ("[Dec  7 00:05] x", "x", None),
        ("[  +0.000123] x", "x", None),
        ("[<    0.000123>] x", "x", None),
        ("[Wed Sep 8 18:01:32 2021] x", "x", None),
        ("41066.536886] x", "x", 41066.536886),
        ("2024-04-29T14:55:41,678661+02:00 CPU: 3 PID: 5", "CPU: 3 PID: 5", None),
        ("[ 2052.051856][ T1668] x", "x", 2052.051856),
        # a hypervisor log wrapping the guest's kernel log; journalctl -o verbose
        ("2023-12-04T10:49:30.127Z In(05) vcpu-5 - Guest: <6>[ 9.5] x", "x", 9.5),
        ("    MESSAGE=x", "x", None),
        # grep -H / -n over log files, a byte-order mark, dmesg --color=always
        ("/var/log/kern.log:Jan  5 02:12:02 host kernel: [ 1.5] x", "x", 1.5),
        ("dmesg.txt:12:[    1.500000] x", "x", 1.5),
        ("\ufeff[    1.500000] x", "x", 1.5),
        ("565 [Sat Sep 11 12:24:42 2021] x", "x", None),
        ("4123 total pagecache pages", "4123 total pagecache pages", None),
        # OpenWrt logread
        ("Mon Jan  5 02:12:02 2023 kern.warn kernel: [ 1.5] x", "x", 1.5),
        ("\x1b[32m[    1.500000] \x1b[0m\x1b[33mx\x1b[0m", "x", 1.5),
        ("\x1e" + '{"MESSAGE": "x", "_SOURCE_MONOTONIC_TIMESTAMP": "5"}', "x", 0.000005),
    ],
)
def test_normalize_line_forms(line: str, text: str, stamp: float | None) -> None:
    assert normalize_line(line) == (text, stamp)


def test_kmsg_dictionary_lines_are_ignored() -> None:
    assert normalize_line(" SUBSYSTEM=pci") is None
    assert normalize_line(" DEVICE=+pci:0000:00:01.0") is None


def test_journal_json_string_and_byte_list() -> None:
    text = "Out of memory: Killed process 9 (x y) total-vm:1kB, anon-rss:1kB, file-rss:1kB"
    as_bytes = {"MESSAGE": list(text.encode()), "_SOURCE_MONOTONIC_TIMESTAMP": "2500000"}
    as_str = {"MESSAGE": text}
    events = parse_lines([json.dumps(as_bytes), json.dumps(as_str)])
    assert [e.victim_comm for e in events] == ["x y", "x y"]
    assert events[0].timestamp == 2.5 and events[1].timestamp is None
    assert events[0].lines == (text,)
    assert normalize_line('{"no": "message"}') is None
    assert normalize_line("{not json") is None


def test_oom_type_rules() -> None:
    def oom_type(text: str) -> str | None:
        return parse_text(text)[0].oom_type

    assert oom_type("Memory cgroup out of memory: Killed process 1 (a)") == "memcg"
    assert oom_type("Out of memory: Killed process 1 (a)") == "global"
    assert oom_type("Killed process 1 (a) total-vm:1kB") is None
    assert oom_type("oom-kill:constraint=CONSTRAINT_MEMCG,task=a,pid=1,uid=0") == "memcg"
    assert oom_type("oom-kill:constraint=CONSTRAINT_NONE,task=a,pid=1,uid=0") == "global"
    assert oom_type("oom-kill:constraint=CONSTRAINT_CPUSET,global_oom,task=a,pid=1") == "global"
    assert oom_type("Task in /a killed as a result of limit of /") == "memcg"


def test_comm_with_spaces_and_parentheses() -> None:
    (event,) = parse_text(
        "Out of memory: Kill process 5 (my (odd) name) score 10 or sacrifice child\n"
        "Killed process 6 (a) b (c)) total-vm:10kB, anon-rss:5kB, file-rss:1kB\n"
        "oom_reaper: reaped process 6 (a) b (c)), now anon-rss:0kB, file-rss:0kB\n"
    )
    assert (event.selected_pid, event.score) == (5, 10)
    assert (event.victim_pid, event.victim_comm, event.total_vm_kb) == (6, "a) b (c)", 10)
    assert event.reaped


def test_kill_sharing_memory_line_is_not_a_selection() -> None:
    events = parse_text("Kill process 5 (x) sharing same memory\n")
    assert events == []


def test_cut_lines_keep_what_they_have() -> None:
    (event,) = parse_text("Memory cgroup out of memory: Killed process 12 (pyth")
    assert (event.victim_pid, event.victim_comm, event.oom_type) == (12, None, "memcg")
    (event,) = parse_text("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_al")
    assert event.constraint == "CONSTRAINT_MEMCG" and event.victim_pid is None


def test_old_invoker_with_oom_adj_and_cpu_line() -> None:
    (event,) = parse_text(
        "bash invoked oom-killer: gfp_mask=0x201da, order=0, oom_adj=0, oom_score_adj=0\n"
        "Pid: 77, comm: bash Not tainted 2.6.32 #1\n"
        "Out of memory: Kill process 80 (java) score 900 or sacrifice child\n"
        "Killed process 80 (java) vsz:100kB, anon-rss:50kB, file-rss:1kB\n"
    )
    assert (event.invoker_comm, event.invoker_pid, event.victim_pid) == ("bash", 77, 80)
    assert event.total_vm_kb is None and event.anon_rss_kb == 50


def test_reaper_reaches_earlier_event_after_other_lines() -> None:
    events = parse_text(
        "[1.0] a invoked oom-killer: gfp_mask=0x0, order=0, oom_score_adj=0\n"
        "[1.1] Out of memory: Killed process 10 (a) total-vm:1kB\n"
        "[1.2] some other kernel message\n"
        "[1.3] b invoked oom-killer: gfp_mask=0x0, order=0, oom_score_adj=0\n"
        "[1.4] oom_reaper: reaped process 10 (a), now anon-rss:0kB\n"
        "[1.5] Out of memory: Killed process 11 (b) total-vm:1kB\n"
    )
    assert [(e.victim_pid, e.reaped, e.timestamp) for e in events] == [
        (10, True, 1.0),
        (11, False, 1.3),
    ]
    assert events[0].lines[-1].endswith("reaped process 10 (a), now anon-rss:0kB")


def test_reaper_for_unknown_pid_is_ignored() -> None:
    assert parse_text("oom_reaper: reaped process 99 (x), now anon-rss:0kB") == []


def test_feed_hands_out_events_as_the_next_report_reaches_its_kill() -> None:
    parser = OomLogParser()
    assert parser.feed("Out of memory: Killed process 1 (a) total-vm:1kB") == []
    partial = parser.partial()
    assert partial is not None and partial.victim_pid == 1
    assert parser.feed("x invoked oom-killer: gfp_mask=0x0, order=0") == []
    assert [e.victim_pid for e in parser.pending()] == [1, None]
    done = parser.feed("Out of memory: Killed process 2 (b) total-vm:1kB")
    assert [e.victim_pid for e in done] == [1]
    assert [e.victim_pid for e in parser.flush()] == [2]
    assert parser.partial() is None and parser.flush() == []


def kprintf(fmt: str, *args: object) -> str:
    """A line as the kernel's printk would write it from the C format string ``fmt``."""
    py = re.sub(
        r"%(-?\d*)(?:hh|h|ll|l)?([duxs])",
        lambda m: "%" + m.group(1) + ("d" if m.group(2) in "ud" else m.group(2)),
        fmt,
    )
    return py % args


# The format strings of mm/oom_kill.c, copied from the kernel versions named.
# Linux 3.10 dump_tasks() and oom_kill_process():
TASKS_3_10 = "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name"
ROW_3_10 = "[%5d] %5d %5d %8lu %8lu %7lu %8lu         %5hd %s"
KILL_3_10 = "%s: Kill process %d (%s) score %d or sacrifice child"
KILLED_3_10 = "Killed process %d (%s) total-vm:%lukB, anon-rss:%lukB, file-rss:%lukB"
# Linux 4.19 dump_tasks() and __oom_kill_process(); mem_cgroup_print_oom_group().
TASKS_4_19 = "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name"
ROW_4_19 = "[%7d] %5d %5d %8lu %8lu %8ld %8lu         %5hd %s"
KILLED_4_19 = (
    "Killed process %d (%s) total-vm:%lukB, anon-rss:%lukB, file-rss:%lukB, shmem-rss:%lukB"
)


def test_victim_oom_score_adj_from_the_task_table_of_a_3_10_report() -> None:
    # 3.x kill lines carry no oom_score_adj: only the victim's task table row says it.
    # The selected parent (adj 0) sacrifices its child (adj 800); the invoker has 0.
    lines = [
        "python invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=0",
        "CPU: 1 PID: 4100 Comm: python Not tainted 3.10.0-1160.el7.x86_64 #1",
        "Task in /oomguard-1-2/worker-0 killed as a result of limit of /oomguard-1-2/worker-0",
        "memory: usage 262144kB, limit 262144kB, failcnt 7",
        TASKS_3_10,
        kprintf(ROW_3_10, 1, 0, 1, 48000, 1200, 30, 0, 0, "systemd"),
        kprintf(ROW_3_10, 4100, 1000, 4100, 60000, 30000, 80, 0, 0, "python"),
        kprintf(ROW_3_10, 4101, 1000, 4101, 70000, 65000, 150, 0, 800, "tmux: srv (x)"),
        kprintf(KILL_3_10, "Memory cgroup out of memory", 4100, "python", 1000),
        kprintf(KILLED_3_10, 4101, "tmux: srv (x)", 280000, 259000, 1000),
    ]
    stamped = [f"[{512 + i / 1000:12.6f}] {line}" for i, line in enumerate(lines)]
    for form in (lines, stamped):
        (event,) = _parse_checked(form)
        assert (event.selected_pid, event.victim_pid, event.victim_comm) == (
            4100,
            4101,
            "tmux: srv (x)",
        )
        assert (event.oom_score_adj, event.oom_type, event.score) == (800, "memcg", 1000)


def test_the_task_table_is_read_by_its_header_not_by_position() -> None:
    # 2.6.36 until 2012 ("mm, oom: replace some information in tasklist dump") printed
    # cpu and oom_adj before oom_score_adj; newer kernels add rss_anon/rss_file/rss_shmem.
    old = [
        "[ pid ]   uid  tgid total_vm      rss cpu oom_adj oom_score_adj name",
        kprintf(
            "[%5d] %5d %5d %8lu %8lu %3u     %3d         %5d %s",
            *(7, 0, 7, 10, 5, 1, 15, 1000, "a"),
        ),
        "Out of memory: Kill process 7 (a) score 999 or sacrifice child",
        "Killed process 7 (a) total-vm:40kB, anon-rss:20kB, file-rss:0kB",
    ]
    new = [
        "Tasks state (memory values in pages):",
        "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes "
        "swapents oom_score_adj name",
        kprintf(
            "[%7d] %5d %5d %8lu %8lu %8lu %8lu %9lu %8ld %8lu         %5hd %s",
            *(8, 0, 8, 10, 5, 4, 1, 0, 4096, 0, -17, "b"),
        ),
        "Out of memory: Killed process 8 (b) total-vm:40kB, anon-rss:16kB, file-rss:4kB",
    ]
    # A table whose header has no oom_score_adj column (2.6.32) or was cut says nothing.
    cut = [
        "[ pid ]   uid  tgid total_vm      rss cpu oom_adj name",
        "[    9]     0     9       10        5   1     -17 c",
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes sw...",
        "[    9]     0     9       10        5     4096        0         -17 c",
        "Out of memory: Killed process 9 (c) total-vm:40kB, anon-rss:16kB, file-rss:4kB",
    ]
    assert [e.oom_score_adj for e in _parse_checked(old)] == [1000]
    assert [e.oom_score_adj for e in _parse_checked(new)] == [-17]
    assert [e.oom_score_adj for e in _parse_checked(cut)] == [None]


def test_memory_oom_group_members_get_their_own_oom_score_adj_from_the_table() -> None:
    lines = [
        "stress invoked oom-killer: gfp_mask=0x6000c0(GFP_KERNEL), nodemask=(null), order=0, "
        "oom_score_adj=0",
        "Tasks state (memory values in pages):",
        TASKS_4_19,
        kprintf(ROW_4_19, 2001, 0, 2001, 9000, 8000, 65536, 0, 900, "stress"),
        kprintf(ROW_4_19, 2002, 0, 2002, 5000, 4000, 49152, 0, 500, "stress worker"),
        kprintf(KILL_3_10, "Memory cgroup out of memory", 2001, "stress", 1900),
        kprintf(KILLED_4_19, 2001, "stress", 36000, 32000, 0, 0),
        "Tasks in /job are going to be killed due to memory.oom.group set",
        kprintf(KILLED_4_19, 2002, "stress worker", 20000, 16000, 0, 0),
        # The next report has a table without the old victims: nothing leaks into it.
        "b invoked oom-killer: gfp_mask=0x6000c0(GFP_KERNEL), nodemask=(null), order=0, "
        "oom_score_adj=0",
        kprintf(KILLED_4_19, 2002, "stress worker", 20000, 16000, 0, 0),
    ]
    events = _parse_checked(lines)
    assert [(e.victim_pid, e.oom_score_adj, e.oom_group) for e in events] == [
        (2001, 900, True),
        (2002, 500, True),
        (2002, None, False),
    ]


@pytest.mark.parametrize(
    ("lines", "oom_type", "selected"),
    [
        # 3.10 and 4.19 print the memcg message only on the "Kill process" line; a pasted
        # log cut or wrapped it, and the "Killed process" line that follows has none.
        (
            [
                "Memory cgroup out of memory: Kill process 2001 (stress) score 1900 or sacrifice",
                " child",
            ],
            "memcg",
            2001,
        ),
        (["Memory cgroup out of memory: Kill process 2001 (stre"], "memcg", 2001),
        (
            [
                "Memory cgroup out of memory: Kill",
                "process 2001 (stress) score 1900 or sacrifice child",
            ],
            "memcg",
            None,
        ),
        (["Memory cgroup out of memory:"], "memcg", None),
        (["Out of memory: Kill process 2001 (stress) score 1900 or sacri"], "global", 2001),
    ],
)
def test_oom_type_from_a_cut_kill_line_without_a_constraint_line(
    lines: list[str], oom_type: str, selected: int | None
) -> None:
    killed = kprintf(KILLED_4_19, 2001, "stress", 36000, 32000, 0, 0)
    (event,) = _parse_checked([*lines, killed])
    assert (event.oom_type, event.selected_pid, event.victim_pid) == (oom_type, selected, 2001)
    assert event.constraint is None


def test_a_kill_of_a_process_sharing_the_memory_is_not_a_report() -> None:
    # 3.10 oom_kill_process(): other users of the victim's mm get "Kill process %d (%s)
    # sharing same memory", with no message: no new event, no type.
    lines = [
        kprintf(KILLED_3_10, 4101, "a", 1, 1, 1),
        kprintf("Kill process %d (%s) sharing same memory", 4102, "b"),
    ]
    assert [(e.victim_pid, e.oom_type) for e in _parse_checked(lines)] == [(4101, None)]


def test_v1_task_in_line_and_memcg_kill() -> None:
    (event,) = parse_text(
        "java invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=0\n"
        "CPU: 1 PID: 9949 Comm: java Tainted: P OE 3.10.0-327.13.1.el7.x86_64 #1\n"
        "Task in /docker/abc killed as a result of limit of /docker\n"
        "memory: usage 65536kB, limit 65536kB, failcnt 19\n"
        "Memory cgroup out of memory: Kill process 9949 (java) score 1000 or sacrifice child\n"
        "Killed process 9949 (java) total-vm:100kB, anon-rss:60kB, file-rss:0kB\n"
    )
    assert (event.task_memcg, event.oom_memcg, event.oom_type) == (
        "/docker/abc",
        "/docker",
        "memcg",
    )
    assert event.invoker_pid == 9949 and event.score == 1000
    assert any("limit 65536kB" in line for line in event.lines)


def _parse_checked(lines: list[str]) -> list[OomEvent]:
    """parse_lines, failing the test when the parser skipped a line it failed on."""
    parser = OomLogParser()
    events = [e for line in lines for e in parser.feed(line)]
    parser.partial()
    parser.pending()
    events += parser.flush()
    assert parser.errors == 0, repr(parser.last_error)
    return events


def test_a_line_the_parser_fails_on_is_counted_not_raised() -> None:
    parser = OomLogParser()
    parser.feed(None)  # type: ignore[arg-type]  # not text: a bug of the caller's
    assert parser.errors == 1 and isinstance(parser.last_error, AttributeError)
    assert parser.feed("Out of memory: Killed process 5 (x) total-vm:1kB") == []
    assert [e.victim_pid for e in parser.flush()] == [5]


def test_never_raises_on_garbage() -> None:
    for junk in ["", "\x00\xff", "(", ")", "Killed process", "oom-kill:", "{", "1,2,3;"]:
        assert _parse_checked([junk]) == []
        assert _parse_checked([junk, junk + "\n"]) == []
    # Cut where a name may still follow: the kill is known, the name is not.
    (event,) = _parse_checked(["Killed process 12 ("])
    assert (event.victim_pid, event.victim_comm) == (12, None)


def test_one_kmsg_decoder_for_the_device_and_saved_records(tmp_path: Path) -> None:
    # The kernel escapes every byte outside printable ASCII (devkmsg_read ->
    # msg_print_ext_body): a UTF-8 comm comes as escapes, a newline as \x0a.
    record = (
        "3,9,2500000,-;Out of memory: Killed process 3 (\\xe4\\xb8\\xad\\x20b) "
        "total-vm:1kB\\x0aanon-rss:2kB\n SUBSYSTEM=x"
    )
    decoded = kmsg.parse_record(record.encode())
    assert decoded is not None and decoded.seq == 9 and decoded.stamp == 2.5
    assert decoded.text == "Out of memory: Killed process 3 (\u4e2d b) total-vm:1kB\nanon-rss:2kB"
    assert kmsg.parse_record(record) == decoded  # the same record, read as text
    assert kmsg.parse_record(" SUBSYSTEM=x") is None and kmsg.is_dictionary_line(" SUBSYSTEM=x")
    assert kmsg.unescape("no escapes") == "no escapes"
    assert kmsg.unescape("cut \\xe4\\xb8") == "cut \ufffd"
    device = tmp_path / "kmsg"
    device.write_text(record.split("\n")[0] + "\n")
    follower = KernelLogFollower(device)
    follower.open(from_start=True)
    try:
        from_device = follower.read_new()
    finally:
        follower.close()
    (saved,) = parse_lines([record.split("\n")[0]])
    (read,) = parse_lines(from_device)
    assert saved.victim_comm == read.victim_comm == "\u4e2d b"
    assert saved.to_json() == read.to_json() and saved.timestamp == 2.5


def test_follower_reads_kmsg_records_from_a_file(tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    log.write_text(
        "6,1,1000000,-;hello\n SUBSYSTEM=x\n"
        "3,2,2500000,-;Out of memory: Killed process 3 (a\\x20b) total-vm:1kB\n"
    )
    follower = KernelLogFollower(log)
    follower.open(from_start=True)
    try:
        lines = follower.read_new()
        assert lines == [
            "[    1.000000] hello",
            "[    2.500000] Out of memory: Killed process 3 (a b) total-vm:1kB",
        ]
        assert follower.read_new() == []
    finally:
        follower.close()
    (event,) = parse_lines(lines)
    assert (event.victim_comm, event.timestamp) == ("a b", 2.5)


def test_follower_reports_why_it_cannot_open(tmp_path: Path) -> None:
    follower = KernelLogFollower(tmp_path / "missing")
    with pytest.raises(KernelLogUnavailable, match="no such file"):
        follower.open()
    reason = sources._reason(OSError(errno.EPERM, os.strerror(errno.EPERM)), "/dev/kmsg")
    assert "dmesg_restrict" in reason and "CAP_SYSLOG" in reason


@pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="/dev/kmsg is not readable")
def test_follower_on_real_kmsg_does_not_block() -> None:
    with KernelLogFollower() as follower:
        assert isinstance(follower.read_new(), list)  # only records written since open
    follower = KernelLogFollower()
    follower.open(from_start=True)
    try:
        assert all(isinstance(line, str) for line in follower.read_new())
    finally:
        follower.close()


def test_iter_source_lines_file_and_errors(tmp_path: Path) -> None:
    log = tmp_path / "k.log"
    log.write_text("[  10.0] old\n[ 500.0] new\nno stamp\n")
    assert [line.strip() for line in iter_source_lines(str(log), None, False)] == [
        "[  10.0] old",
        "[ 500.0] new",
        "no stamp",
    ]
    kept = [line.strip() for line in iter_source_lines(str(log), 400.0, False)]
    assert kept == ["[ 500.0] new", "no stamp"]
    with pytest.raises(KernelLogUnavailable, match="cannot read"):
        list(iter_source_lines(str(tmp_path / "nope"), None, False))


def test_auto_source_explains_every_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(name: str, follow: bool) -> object:
        raise KernelLogUnavailable(f"{name} broken")

    real = sources._open_source

    def fake(source: str, follow: bool) -> object:
        if source == "auto":
            return real(source, follow)
        return fail(source, follow)

    monkeypatch.setattr(sources, "_open_source", fake)
    with pytest.raises(KernelLogUnavailable, match=r"kmsg broken.*dmesg broken.*journal broken"):
        list(sources.iter_source_lines("auto", None, False))


def test_event_is_frozen() -> None:
    event = OomEvent(victim_pid=1)
    with pytest.raises(AttributeError):
        event.victim_pid = 2  # type: ignore[misc]


def test_other_programs_lines_are_not_kernel_text() -> None:
    # systemd's own "Killing process" and journal records of other transports
    assert normalize_line("Mar 17 22:36:50 host systemd[1]: x.scope: Killing process 1 (a)") is None
    assert normalize_line('{"MESSAGE": "Killed process 1 (a)", "_TRANSPORT": "syslog"}') is None
    assert normalize_line("Mon Jan  5 02:12:02 2023 daemon.info dnsmasq[1]: x") is None
    assert parse_text("Dec 11 10:48:08 host dockerd: Killed process 1 (a) total-vm:1kB") == []
    logcat = "10-24 14:24:18.022   710   710 I lowmemorykiller: Kill 'a.b' (6673), uid 10565"
    assert parse_text(logcat) == []


def test_very_old_kill_lines() -> None:
    (event,) = parse_text(
        "Out of Memory: Kill process 2583 (httpd) score 12345 and children.\n"
        "Out of memory: Killed process 2583, UID 48, (httpd).\n"
    )
    assert (event.selected_pid, event.score, event.victim_comm, event.uid) == (
        2583,
        12345,
        "httpd",
        48,
    )
    assert event.oom_type == "global"


def test_no_kill_is_no_event() -> None:
    text = (
        "[ 1.0] Out of memory and no killable processes...\n"
        "[ 1.1] Kernel panic - not syncing: Out of memory: compulsory panic_on_oom is enabled\n"
        "[ 1.2] CPU: 3 PID: 724 Comm: systemd-userdbd Tainted: G  W  OE  5.10.35 #1\n"
        "[ 1.3] Tasks state (memory values in pages):\n"
        "[ 1.4] [  19331]  1000 19331   226026    29603  1314816        0  999 npm start\n"
    )
    assert parse_text(text) == []


def test_unable_to_reap_is_not_reaped() -> None:
    (event,) = parse_text(
        "Out of memory: Killed process 9 (java) total-vm:1kB\n"
        "oom_reaper: unable to reap pid:9 (java)\n"
    )
    assert not event.reaped


def test_cut_invoker_line_still_names_the_invoker() -> None:
    (event,) = parse_text("[5.0] python3 invoked oom-killer")
    assert (event.invoker_comm, event.timestamp) == ("python3", 5.0)


def test_kmsg_utf8_comm() -> None:
    record = "3,9,1000,-;Out of memory: Killed process 7 (\\xe6\\xb5\\x8b) total-vm:1kB\r\n"
    (event,) = parse_lines([record])
    assert event.victim_comm == "\u6d4b" and event.timestamp == 0.001


def test_follower_decodes_utf8_escapes(tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    log.write_text("3,2,2500000,-;Killed process 3 (\\xe6\\xb5\\x8b\\x5cx41) total-vm:1kB\n")
    follower = KernelLogFollower(log)
    follower.open(from_start=True)
    try:
        assert follower.read_new() == ["[    2.500000] Killed process 3 (\u6d4b\\x41) total-vm:1kB"]
    finally:
        follower.close()


def test_summary_split_over_lines_without_commas() -> None:
    (event,) = parse_text(
        "6,727,35945901675,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),\n"
        "cpuset=cri-containerd-f6.scope,mems_allowed=0,\n"
        "oom_memcg=/kubepods.slice/a.slice,\n"
        "task_memcg=/kubepods.slice/a.slice/f6.scope,\n"
        "task=python,pid=988370,uid=0\n"
        "\n"
        "3,728,35945901683,-;Memory cgroup out of memory: Killed process 988370 (python) "
        "total-vm:9783776kB, anon-rss:95724kB, file-rss:3268kB, shmem-rss:0kB\n"
    )
    assert (event.oom_memcg, event.task_memcg) == (
        "/kubepods.slice/a.slice",
        "/kubepods.slice/a.slice/f6.scope",
    )
    assert (event.victim_pid, event.uid, event.timestamp) == (988370, 0, 35945.901675)


WRAPPED = (
    "[13629.669931] Task in /docker/3215ee406f572d12ac48be036a0e122af6e85 killed as a result "
    "of limit of /docke\n"
    "r/3215ee406f572d12ac48be036a0e122af6e85\n"
    "[13629.669956] memory: usage 4194304kB, limit 4194304kB, failcnt 23483\n"
)


def test_line_wrapped_by_a_terminal_is_joined() -> None:
    (event,) = parse_text(WRAPPED)
    assert event.oom_memcg == "/docker/3215ee406f572d12ac48be036a0e122af6e85"
    assert event.task_memcg == event.oom_memcg and event.timestamp == 13629.669931


def test_indented_and_message_lines_are_not_wrapped_tails() -> None:
    events = parse_text(
        "[ 1.000000] Out of memory: Killed process 10 (a) total-vm:1kB, anon-rss:1kB, "
        "file-rss:1kB\n"
        "                 active_file:0 inactive_file:64 isolated_file:0\n"
        "b invoked oom-killer: gfp_mask=0x0, order=0, oom_score_adj=0\n"
    )
    assert [(e.victim_pid, e.invoker_comm) for e in events] == [(10, None), (None, "b")]


def test_a_line_read_late_is_pending_already() -> None:
    parser = OomLogParser()
    line = (
        "[ 7063.247407] Memory cgroup out of memory: Killed process 63214 (uwsgi) "
        "total-vm:3149468kB, anon-rss:164992kB, file-rss:52176kB, shmem-rss:92kB"
    )
    assert parser.feed(line) == []
    assert [e.victim_pid for e in parser.pending()] == [63214]
    partial = parser.partial()
    assert partial is not None and partial.anon_rss_kb == 164992
    assert [e.victim_pid for e in parser.flush()] == [63214]
    assert parser.flush() == []


def test_long_and_hostile_lines_do_not_raise() -> None:
    junk = [
        "x" * 1_000_000,
        "task=" * 20_000 + ",pid=1",
        "[" * 50_000,
        " " * 100_000 + "Killed process 1 (",
        "oom-kill:constraint=" + ",task_memcg=" * 10_000,
        "Jan  5 " + "a " * 50_000 + "kernel: x",
    ]
    events = {line[:12]: _parse_checked([line, line + "\r\n"]) for line in junk}
    assert [e.victim_pid for e in events[" " * 12]] == [1, 1]  # two kills, names cut off
    (summary,) = events["oom-kill:con"]  # a summary made of its keys alone: no fields
    assert (summary.constraint, summary.victim_pid) == (None, None)
    assert all(not found for key, found in events.items() if key.strip() and key != "oom-kill:con")


def test_journal_json_pretty_records() -> None:
    lines = [
        "{",
        '\t"_TRANSPORT" : "kernel",',
        '\t"_SOURCE_MONOTONIC_TIMESTAMP" : "7063247407",',
        '\t"MESSAGE" : "Memory cgroup out of memory: Killed process 63214 (uwsgi) total-vm:1kB"',
        "}",
        "{",
        '\t"_TRANSPORT" : "kernel",',
        '\t"MESSAGE" : "oom_reaper: reaped process 63214 (uwsgi), now anon-rss:0kB"',
        "}",
    ]
    (event,) = parse_lines(lines)
    assert (event.victim_pid, event.oom_type, event.reaped) == (63214, "memcg", True)
    assert event.timestamp == 7063.247407
    # a lone "{" that opens no record swallows nothing
    (event,) = parse_lines(["{", "Out of memory: Killed process 5 (y)", "}"])
    assert (event.victim_pid, event.oom_type) == (5, "global")
