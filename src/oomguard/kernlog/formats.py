"""The text formats behind :mod:`oomguard.kernlog.parser`: how log readers frame a kernel
line, and how the kernel words an OOM report.

Two halves. :func:`split_line` strips what a log reader put in front of the kernel's
text (``/dev/kmsg`` record headers, ``dmesg`` stamps in any ``--time-format``, syslog and
journal headers) and keeps the time since boot where one is given. The message grammar
below it (regexes, :func:`split_comm`, :func:`parse_summary`) follows the kernel's
``printk`` formats in ``mm/oom_kill.c`` and ``mm/memcontrol.c`` from 2.6.32 to 6.x.
Nothing here raises on bad input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from oomguard.kernlog import kmsg

__all__ = ["LineAssembler", "LineForm", "normalize_line", "split_line"]

# ---------------------------------------------------------------------------------------
# Line forms: strip the prefixes the different log readers add, keep the timestamp.

#: What framed a line: a journal record, a ``/dev/kmsg`` record, a reader's stamp or
#: header (``dmesg``, syslog), or nothing (``dmesg -t``, a pasted fragment).
LineKind = Literal["journal", "kmsg", "framed", "bare"]


@dataclass(frozen=True)
class LineForm:
    """A log line split into the kernel's text and what the reader added."""

    text: str
    stamp: float | None
    kind: LineKind


# Markdown / e-mail quoting and indentation of pasted logs, a byte-order mark.
_QUOTE_RE = re.compile(r"^[\s\ufeff]*(?:>\s?)*\s*")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # dmesg --color=always
# grep -H / -n over log files ("/var/log/kern.log:12:"), or an editor's line numbers,
# before a dmesg stamp or a syslog clock.
_GREP_RE = re.compile(
    r"^(?:[\w./-]*\w:(?:\d+[:-])?|\d{1,7}\s+)"
    r"(?=(?:<\d{1,3}>)?\[\s*\d+\.\d+\]|\[[A-Z][a-z]{2} [A-Z]|[^\W\d_]{3,9}\.? +\d{1,2} \d\d:)"
)
_PRIO_RE = re.compile(r"^<\d{1,3}>")
# A syslog clock: "Nov  3 18:09:24", localised months ("апр 28", "déc. 3"), "3 Nov",
# journalctl short-full ("Mon 2023-05-15 23:09:27"), with optional fractions.
_CLOCK = (
    r"(?:(?:(?:[^\W\d_]{2,3}\s+)?(?:[^\W\d_]{3,9}\.?\s+\d{1,2}|\d{1,2}\s+[^\W\d_]{3,9}\.?)"
    r"|(?:[^\W\d_]{2,3}\s+)?\d{4}-\d\d-\d\d)\s+\d\d:\d\d:\d\d(?:[.,]\d+)?(?:\s+\d{4})?"
    r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"  # RFC 3339
    r"|\d{9,11}\.\d{3,9})"  # journalctl -o short-unix
)
_SYSLOG_RE = re.compile(
    r"^(?:<\d{1,3}>)?" + _CLOCK + r"(?:\s+\S+){0,2}?\s+kernel(?:\[\d+\])?:[ \t]?"
)
# Another program's syslog line ("host systemd[1]: ..."): not kernel text, never a kill.
_OTHER_SYSLOG_RE = re.compile(
    r"^(?:<\d{1,3}>)?" + _CLOCK + r"\s+\S+\s+(?!kernel\b)[\w.@/()-]+(?:\[\d+\])?:(?:\s|$)"
)
# RFC 5424 (rsyslog "<6>1 2024-05-01T10:00:00.1+00:00 host kernel - - - text").
_RFC5424_RE = re.compile(r"^(?:<\d{1,3}>)?1 \S+ \S+ kernel \S+ \S+ (?:-|\[.*?\]) ?")
# journalctl -o verbose / export: "    MESSAGE=text".
_FIELD_RE = re.compile(r"^MESSAGE=")
_ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[,.]\d+(?:[+-]\d\d:?\d\d|Z)?\s")
# A clock, then a dmesg stamp further on: hypervisor / collector logs that wrap the
# guest's kernel log ("2023-12-04T10:49:30.127Z In(05) vcpu-5 - Guest: <6>[  12.3] ...").
_EMBEDDED_STAMP_RE = re.compile(
    r"^[^\[]{0,120}?\d\d:\d\d:\d\d[^\[]{0,80}?(?:<\d{1,3}>)?(?=\[\s*\d+\.\d+\])"
)
_KERNEL_TAG_RE = re.compile(r"^(?:[\w.-]+\s+)?kernel(?:\[\d+\])?:[ \t]")
_FACILITY_RE = re.compile(r"^[a-z]+\s*:[a-z]+\s*: ")  # dmesg -x: "kern  :err   : "
# "[  190.933863]", dmesg -d "[  1.5 <  0.000123>]", and a stamp whose "[" was cut off.
_STAMP_RE = re.compile(r"^\[?\s*(\d+)\.(\d+)(?:\s*<\s*[\d.]+>)?\]\s?")
# dmesg -T, dmesg -H / -e ("[Dec  7 00:05]", "[  +0.000123]"): no time since boot.
_HUMAN_STAMP_RE = re.compile(
    r"^\[(?:[A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d \d{4}"
    r"|[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d|\s*[+-]\s*\d+\.\d+|<\s*\d+\.\d+>)\]\s?"
)
_CALLER_RE = re.compile(r"^\[\s*[TC]\d+\]\s?")


def _journal_message(line: str) -> tuple[str, float | None] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    transport = record.get("_TRANSPORT")
    if isinstance(transport, str) and transport != "kernel":
        return None  # another program's record: its "Killing process ..." is no OOM kill
    message = record.get("MESSAGE")
    if isinstance(message, list):
        # journald stores messages that are not valid UTF-8 as a list of byte values.
        try:
            message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256)
            message = message.decode("utf-8", "replace")
        except (TypeError, ValueError):
            return None
    if not isinstance(message, str):
        return None
    stamp: float | None = None
    raw = record.get("_SOURCE_MONOTONIC_TIMESTAMP")
    if isinstance(raw, (str, int)) and not isinstance(raw, bool):
        try:
            stamp = int(raw) / 1_000_000
        except ValueError:
            stamp = None
    return message.rstrip("\r\n"), stamp


def split_line(line: str) -> LineForm | None:
    """Split one log line into the kernel's text, its time since boot, and its framing.

    Returns ``None`` for lines that carry no kernel text: ``/dev/kmsg`` dictionary
    lines, journal records without a message or from another transport, and other
    programs' syslog lines.
    """
    line = line.rstrip("\r\n").lstrip("\x1e")  # \x1e: journalctl -o json-seq
    if line.lstrip().startswith("{"):
        found = _journal_message(line.strip())
        if found is None:
            return None
        inner = _strip_prefixes(found[0]) or LineForm(found[0], None, "bare")
        stamp = found[1] if found[1] is not None else inner.stamp
        return LineForm(inner.text, stamp, "journal")
    if kmsg.is_dictionary_line(line):
        return None
    record = kmsg.parse_record(line)
    if record is not None:
        return LineForm(record.text, record.stamp, "kmsg")
    return _strip_prefixes(line)


def _strip_prefixes(line: str) -> LineForm | None:
    """The text of a ``dmesg`` / syslog / pasted line: :func:`split_line` without records."""
    framed = False
    stamp: float | None = None
    if "\x1b" in line:
        line = _ANSI_RE.sub("", line)
    line = _QUOTE_RE.sub("", line, count=1)
    line = _GREP_RE.sub("", line, count=1)
    line = _FIELD_RE.sub("", line, count=1)
    m2 = _SYSLOG_RE.match(line) or _RFC5424_RE.match(line)
    if m2 is None and _OTHER_SYSLOG_RE.match(line):
        return None
    if m2 is None and not line.startswith("["):
        m2 = _EMBEDDED_STAMP_RE.match(line) or _ISO_RE.match(line) or _KERNEL_TAG_RE.match(line)
    if m2 is not None:
        line = line[m2.end() :]
        framed = True
    line = _FACILITY_RE.sub("", line, count=1)
    line = _PRIO_RE.sub("", line, count=1)
    m3 = _STAMP_RE.match(line)
    if m3 is not None:
        stamp = float(f"{m3.group(1)}.{m3.group(2)}")
        line = line[m3.end() :]
        framed = True
        m4 = _KERNEL_TAG_RE.match(line)  # journalctl -o short-monotonic: "[ 1.5] host kernel: "
        if m4 is not None:
            line = line[m4.end() :]
    else:
        m5 = _HUMAN_STAMP_RE.match(line)
        if m5 is not None:
            line = line[m5.end() :]
            framed = True
    line = _CALLER_RE.sub("", line, count=1)
    return LineForm(line, stamp, "framed" if framed else "bare")


def normalize_line(line: str) -> tuple[str, float | None] | None:
    """Strip a log line down to the kernel's text, with its time since boot if given.

    Returns ``None`` for lines that carry no kernel text (``/dev/kmsg`` dictionary
    continuation lines, journal records without a message, other programs' syslog lines).
    """
    form = split_line(line)
    return None if form is None else (form.text, form.stamp)


#: Shortest framed line that a terminal or a web page may have wrapped.
WRAP_MIN_CHARS = 72
#: Most lines of one ``journalctl -o json-pretty`` record.
MAX_JSON_LINES = 200
_JSON_MEMBER_RE = re.compile(r'^\s*"[^"]*"\s*:')
# A line that starts a kernel message of its own is never the wrapped tail of another.
_MESSAGE_START_RE = re.compile(
    r"^(?:Out of [Mm]emory|Memory cgroup|Killed process|Kill process|oom-kill:|oom_reaper:"
    r"|Tasks? in |Tasks state|CPU: |Call Trace|Hardware name|Mem-Info|Node \d|\d+ pages"
    r"|Free swap|Total swap|lowmem_reserve|Swap cache|SysRq|Kernel panic)"
)


def is_wrapped_tail(raw: str, form: LineForm) -> bool:
    """Whether ``raw`` looks like the rest of the previous line, cut by a wrapping pager.

    Only a bare line (no stamp or header of its own) that does not begin with blank
    space (dmesg indents a record's own continuation lines), a bracket or punctuation,
    and that does not begin a kernel message itself.
    """
    if form.kind != "bare" or not raw or not (raw[0].isalnum() or raw[0] == "/"):
        return False
    return not _MESSAGE_START_RE.match(raw) and INVOKED not in raw


class LineAssembler:
    """Turn raw log lines into whole kernel lines, as ``(form, raw)`` pairs.

    Gathers the lines of a ``journalctl -o json-pretty`` record, and rejoins lines that
    a terminal or a web page wrapped: a long framed line is handed out one line late, or
    with its wrapped tail appended. :meth:`held` shows that line, :meth:`drain` hands it
    out at the end of the input.
    """

    def __init__(self) -> None:
        self._wrap: tuple[LineForm, str] | None = None
        self._json: list[str] | None = None

    def push(self, piece: str) -> list[tuple[LineForm, str]]:
        """Take one physical line (no newline); return the lines it completed."""
        out: list[tuple[LineForm, str]] = []
        for whole in self._json_record(piece.rstrip("\r")):
            out.extend(self._push(whole))
        return out

    def _push(self, piece: str) -> list[tuple[LineForm, str]]:
        form = split_line(piece)
        if self._wrap is not None and form is not None and is_wrapped_tail(piece, form):
            held, raw = self._wrap
            self._wrap = (LineForm(held.text + piece, held.stamp, held.kind), raw + piece)
            return []
        out = self.drain()
        if form is None:
            return out
        if form.kind == "framed" and len(piece) >= WRAP_MIN_CHARS:
            self._wrap = (form, piece)  # its tail may follow
        else:
            out.append((form, piece))
        return out

    def held(self) -> list[tuple[LineForm, str]]:
        """The line held back waiting for a wrapped tail, if any (still held)."""
        return [] if self._wrap is None else [self._wrap]

    def drain(self) -> list[tuple[LineForm, str]]:
        """Hand out the line held back, if any."""
        out, self._wrap = self.held(), None
        return out

    def reset(self) -> None:
        """Forget everything (end of input)."""
        self._wrap = None
        self._json = None

    def _json_record(self, piece: str) -> list[str]:
        """Gather the lines of a ``json-pretty`` record: the lines to read now."""
        if self._json is None:
            if piece.strip() != "{":
                return [piece]
            self._json = []
        elif piece.strip() == "}":
            record, self._json = " ".join([*self._json, piece]), None
            return [record]
        elif not _JSON_MEMBER_RE.match(piece) or len(self._json) > MAX_JSON_LINES:
            lines, self._json = [*self._json, piece], None
            return lines  # not a journal record after all: read its lines as they are
        self._json.append(piece)
        return []


# ---------------------------------------------------------------------------------------
# The kernel's messages. Process names (comm) may contain anything, so they are cut at
# the last ")" (see split_comm) rather than matched by the regexes.

#: The words that open every report (a cut line may end right after them).
INVOKED = " invoked oom-killer"
INVOKER_RE = re.compile(r"^(?P<comm>.*?) invoked oom-killer\b")
CPU_PID_RE = re.compile(r"\bPID: (\d+) Comm: |\bPid: (\d+), comm: ")
_MESSAGE = r"(?:(?P<msg>Memory cgroup out of memory|Out of [Mm]emory)(?: \([^)]*\))?: )?"
KILL_RE = re.compile(_MESSAGE + r"[Kk]ill process (?P<pid>\d+) \((?P<rest>.*)$")
# 3.x-5.0 "or sacrifice child", 2.6.3x "or a child", 2.6.1x "and children".
KILL_TAIL_RE = re.compile(r"^ score (-?\d+) (?:or sacrifice child|or a child|and children)")
KILL_SCORE_RE = re.compile(r"^ score (-?\d+)(?: |$)")
# The message of a kill line cut before its pid (a pasted log wrapped after "Kill"):
# still says which kind of OOM it was.
MESSAGE_ONLY_RE = re.compile(
    r"^(?P<msg>Memory cgroup out of memory|Out of [Mm]emory)(?: \([^)]*\))?:"
    r"(?: (?P<rest>[A-Za-z ]*))?$"
)
KILLED_RE = re.compile(
    _MESSAGE + r"Killed process (?P<pid>\d+)(?:, UID (?P<uid1>\d+),)? \((?P<rest>.*)$"
)
REAPER_RE = re.compile(r"oom_reaper: reaped process (\d+)")
TASK_IN_RE = re.compile(r"^Task in (?P<task>.*?) killed as a result of limit of (?P<oom>.*)$")
GROUP_RE = re.compile(r"^Tasks in (?P<cg>.*) are going to be killed due to memory\.oom\.group")
SUMMARY_RE = re.compile(r"oom-kill:(?=constraint=)")
# Pieces of an "oom-kill:" summary that pr_cont interleaving (or a paste) put on a line
# of their own; without the leading comma only while a summary is being read.
SUMMARY_FRAGMENT_RE = re.compile(r"^,(?:oom_memcg=|global_oom|task_memcg=|task=)")
SUMMARY_PIECE_RE = re.compile(r"^(?:cpuset=|mems_allowed=|oom_memcg=|global_oom|task_memcg=|task=)")

KB_FIELDS = {
    "total_vm_kb": re.compile(r"total-vm:(\d+)kB"),
    "anon_rss_kb": re.compile(r"anon-rss:(\d+)kB"),
    "file_rss_kb": re.compile(r"file-rss:(\d+)kB"),
    "shmem_rss_kb": re.compile(r"shmem-rss:(\d+)kB"),
    "pgtables_kb": re.compile(r"pgtables:(\d+)kB"),
}
UID_RE = re.compile(r"UID[: ](\d+)")
ADJ_RE = re.compile(r"oom_score_adj:(-?\d+)")

# What may follow the ")" closing a comm in the lines above; used to pick the right ")"
# when the name itself contains one.
_AFTER_COMM_RE = re.compile(r"\)(?=$|\.$| score | total-vm:|, UID |, total-vm|, now | vsz:)")

#: Lines kept as evidence of the limit that was hit.
EVIDENCE_PREFIXES = ("memory: usage", "memory+swap: usage", "swap: usage", "kmem: usage")


def split_comm(rest: str) -> tuple[str | None, str]:
    """Split ``comm) tail`` at the ``)`` that closes the process name."""
    matches = list(_AFTER_COMM_RE.finditer(rest))
    end = matches[-1].start() if matches else rest.rfind(")")
    if end < 0:
        return None, ""  # cut inside the name
    return rest[:end], rest[end + 1 :]


def is_cut_kill(rest: str | None) -> bool:
    """Whether ``rest`` (what follows a kill message's ``": "``) is a kill line cut short."""
    rest = (rest or "").rstrip()
    return any(word.startswith(rest) for word in ("Kill process", "kill process", "Killed process"))


# The task table dump_tasks() prints before the kill (vm.oom_dump_tasks=1, the default),
# one row per process: the only place 3.x and 4.x kernels print the victim's
# oom_score_adj (their "Killed process" line has none; later ones end in oom_score_adj:%hd).
# Its columns changed between versions, so a row is read by the header above it:
#   2.6.36 on  "[ pid ]   uid  tgid total_vm      rss cpu oom_adj oom_score_adj name"
#              "[%5d] %5d %5d %8lu %8lu %3u     %3d         %5d %s"
#   3.10       "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name"
#              "[%5d] %5d %5d %8lu %8lu %7lu %8lu         %5hd %s"
#              (since "mm, oom: replace some information in tasklist dump", 2012)
#   4.19       "Tasks state (memory values in pages):", then
#              "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name"
#              "[%7d] %5d %5d %8lu %8lu %8ld %8lu         %5hd %s"
#   6.x        "... rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name"
#              "[%7d] %5d %5d %8lu %8lu %8lu %8lu %9lu %8ld %8lu         %5hd %s"
# Kernels in between and vendor kernels have other columns; the name is always last and
# may hold spaces. 2.6.32's table has oom_adj only (another scale): it is not read.
TASK_HEADER_RE = re.compile(r"^\[\s*pid\s*\]\s+(?P<cols>.*)$")
TASK_ROW_RE = re.compile(r"^\[\s*(?P<pid>\d+)\]\s+(?P<rest>.*)$")


def parse_task_header(text: str) -> tuple[str, ...] | None:
    """The columns after ``pid`` of a task table header that ends ``oom_score_adj name``."""
    m = TASK_HEADER_RE.match(text)
    if m is None:
        return None
    columns = tuple(m.group("cols").split())
    if not columns or columns[-1] != "name" or "oom_score_adj" not in columns:
        return None  # no oom_score_adj column (2.6.32), or a header cut short
    return columns


def parse_task_row(text: str, columns: tuple[str, ...]) -> tuple[int, int | None, int] | None:
    """``(pid, tgid, oom_score_adj)`` of one task table row, read by its header's columns."""
    m = TASK_ROW_RE.match(text)
    if m is None:
        return None
    values = m.group("rest").split(None, len(columns) - 1)
    if len(values) == len(columns) - 1:
        values.append("")  # an empty process name
    if len(values) != len(columns):
        return None
    adj = to_int(values[columns.index("oom_score_adj")])
    if adj is None or not -1000 <= adj <= 1000:
        return None
    tgid = to_int(values[columns.index("tgid")]) if "tgid" in columns else None
    return int(m.group("pid")), tgid, adj


def to_int(text: str | None) -> int | None:
    """``int(text)``, or ``None`` for ``None`` or anything that is not a number."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def parse_summary(body: str) -> dict[str, object]:
    """Parse the fields of an ``oom-kill:`` summary line (or a piece of it).

    Values may contain commas (``mems_allowed=0-1,3``, cgroup names), so each value runs
    up to the next known key rather than to the next comma.
    """
    body = body.rstrip().rstrip(",")
    fields: dict[str, object] = {}
    m = re.search(r"constraint=(CONSTRAINT_[A-Z_]+)", body)
    if m:
        fields["constraint"] = m.group(1)
    if re.search(r"(?:^|,)global_oom(?:,|$)", body):
        fields["global_oom"] = True
    m = re.search(r"(?:^|,)oom_memcg=(.*?)(?=,task_memcg=|,task=|,global_oom|$)", body)
    if m:
        fields["oom_memcg"] = m.group(1)
    m = re.search(r"(?:^|,)task_memcg=(.*?)(?=,task=|$)", body)
    if m:
        fields["task_memcg"] = m.group(1)
    m = re.search(r"(?:^|,)task=(.*),pid=(\d+)(?:,uid=(\d+))?", body)
    if m:
        fields["task"] = m.group(1)
        fields["pid"] = int(m.group(2))
        if m.group(3) is not None:
            fields["uid"] = int(m.group(3))
    return fields


def type_for_message(msg: str | None) -> str | None:
    """``memcg`` or ``global`` from the prefix of a kill line, if it has one."""
    if msg is None:
        return None
    if msg == "Memory cgroup out of memory":
        return "memcg"
    return "global"
