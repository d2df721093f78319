"""Parse kernel OOM-killer reports into :class:`OomEvent` records.

The kernel prints one report per kill, spread over many lines, in formats that changed
between 3.10 and 6.x (see ``mm/oom_kill.c`` and ``mm/memcontrol.c``). The lines that
matter, in the order a report prints them::

    python invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
    CPU: 1 PID: 3128 Comm: python Not tainted 6.1.0 #1
    Task in /a killed as a result of limit of /a                     (v1, < 4.19)
    oom-kill:constraint=CONSTRAINT_MEMCG,...,task=python,pid=3128,uid=0    (>= 4.19)
    Memory cgroup out of memory: Kill process 3128 (python) score 990 or sacrifice child
    Memory cgroup out of memory: Killed process 3128 (python) total-vm:...   (>= 5.3)
    Killed process 3128 (python) total-vm:..., anon-rss:..., file-rss:...    (< 5.3)
    Tasks in /a are going to be killed due to memory.oom.group set
    oom_reaper: reaped process 3128 (python), now anon-rss:0kB, ...

:class:`OomLogParser` takes lines one at a time, in any of the forms the kernel log is
read in (``/dev/kmsg`` records, ``dmesg`` with or without stamps, syslog, ``journalctl
-o json``), and groups them into events. Nothing in it raises on bad input: kernel text
is untrusted (a process name may hold spaces and parentheses) and logs are often cut.

The reading side (``/dev/kmsg``, ``dmesg``, ``journalctl``, files) lives in
:mod:`oomguard.oom.kernlog_sources`; its public names are re-exported here.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from oomguard.oom.kernlog_sources import KernelLogFollower, iter_source_lines

__all__ = [
    "KernelLogFollower",
    "OomEvent",
    "OomLogParser",
    "iter_source_lines",
    "normalize_line",
    "parse_lines",
    "parse_text",
]

#: Keys of :meth:`OomEvent.to_json`, in order (every field but ``lines``).
JSON_KEYS: tuple[str, ...] = (
    "oom_type",
    "constraint",
    "invoker_comm",
    "invoker_pid",
    "selected_pid",
    "score",
    "victim_pid",
    "victim_comm",
    "oom_memcg",
    "task_memcg",
    "total_vm_kb",
    "anon_rss_kb",
    "file_rss_kb",
    "shmem_rss_kb",
    "uid",
    "pgtables_kb",
    "oom_score_adj",
    "reaped",
    "oom_group",
    "timestamp",
)


@dataclass(frozen=True)
class OomEvent:
    """One kill by the kernel's OOM killer, as far as the log tells it.

    ``victim_*`` and the memory figures describe the process that was killed (the
    ``Killed process`` line); ``selected_pid``/``score`` the process the older kernels'
    ``Kill process ... or sacrifice child`` line chose, which can be the victim's parent;
    ``invoker_*`` the task whose allocation ran the OOM killer. ``None`` means the log
    does not say.
    """

    oom_type: str | None = None
    constraint: str | None = None
    invoker_comm: str | None = None
    invoker_pid: int | None = None
    selected_pid: int | None = None
    score: int | None = None
    victim_pid: int | None = None
    victim_comm: str | None = None
    oom_memcg: str | None = None
    task_memcg: str | None = None
    total_vm_kb: int | None = None
    anon_rss_kb: int | None = None
    file_rss_kb: int | None = None
    shmem_rss_kb: int | None = None
    uid: int | None = None
    pgtables_kb: int | None = None
    oom_score_adj: int | None = None
    reaped: bool = False
    oom_group: bool = False
    timestamp: float | None = None
    lines: tuple[str, ...] = ()

    @property
    def rss_kb(self) -> int | None:
        """Resident memory of the victim when killed (anon + file + shmem), if known."""
        parts = [self.anon_rss_kb, self.file_rss_kb, self.shmem_rss_kb]
        if all(p is None for p in parts):
            return None
        return sum(p for p in parts if p is not None)

    def to_json(self) -> dict[str, object]:
        """The event as a JSON-ready dict: every field but ``lines``, ``None`` as null."""
        return {key: getattr(self, key) for key in JSON_KEYS}


# ---------------------------------------------------------------------------------------
# Line forms: strip the prefixes the different log readers add, keep the timestamp.

_KMSG_RE = re.compile(r"^(\d+),(\d+),(\d+),([^;]*);(.*)$", re.DOTALL)
_KMSG_DICT_RE = re.compile(r"^ [A-Z_][A-Z0-9_]*=")
_KMSG_ESCAPE_RE = re.compile(r"\\x([0-9a-fA-F]{2})")
_PRIO_RE = re.compile(r"^<\d{1,3}>")
_STAMP_RE = re.compile(r"^\[\s*(\d+)\.(\d+)\]\s?")
_HUMAN_STAMP_RE = re.compile(r"^\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\]\s?")
_CALLER_RE = re.compile(r"^\[\s*[TC]\d+\]\s?")
_SYSLOG_RE = re.compile(
    r"^(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"  # "Nov  3 18:09:24"
    r"(?:\.\d+)?|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*)"  # RFC 3339 / journalctl -o short-iso
    r"(?: \S+)? kernel: ?"
)
_ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[,.]\d+[+-]\d\d:?\d\d\s")
_FACILITY_RE = re.compile(r"^[a-z]+\s*:[a-z]+\s*: ")  # dmesg -x: "kern  :err   : "


def _unescape_kmsg(text: str) -> str:
    # /dev/kmsg escapes non-printable bytes (and backslashes) as \xNN.
    if "\\x" not in text:
        return text
    return _KMSG_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


def _journal_message(line: str) -> tuple[str, float | None] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
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
    return message, stamp


def normalize_line(line: str) -> tuple[str, float | None] | None:
    """Strip a log line down to the kernel's text, with its time since boot if given.

    Returns ``None`` for lines that carry no kernel text (``/dev/kmsg`` dictionary
    continuation lines, journal records without a message).
    """
    line = line.rstrip("\r\n")
    stamp: float | None = None
    if line.startswith("{"):
        found = _journal_message(line)
        if found is None:
            return None
        line, stamp = found
        line = line.rstrip("\r\n")
    elif _KMSG_DICT_RE.match(line):
        return None
    else:
        m = _KMSG_RE.match(line)
        if m is not None:
            return _unescape_kmsg(m.group(5)), int(m.group(3)) / 1_000_000
    line = _PRIO_RE.sub("", line, count=1)
    m2 = _SYSLOG_RE.match(line) or _ISO_RE.match(line)
    if m2 is not None:
        line = line[m2.end() :]
    line = _FACILITY_RE.sub("", line, count=1)
    m3 = _STAMP_RE.match(line)
    if m3 is not None:
        stamp = float(f"{m3.group(1)}.{m3.group(2)}")
        line = line[m3.end() :]
    else:
        line = _HUMAN_STAMP_RE.sub("", line, count=1)
    line = _CALLER_RE.sub("", line, count=1)
    return line, stamp


# ---------------------------------------------------------------------------------------
# The kernel's messages. Process names (comm) may contain anything, so they are cut at
# the last ")" (see _split_comm) rather than matched by the regexes.

_INVOKER_RE = re.compile(r"^(?P<comm>.*?) invoked oom-killer:")
_CPU_PID_RE = re.compile(r"\bPID: (\d+) Comm: |\bPid: (\d+), comm: ")
_KILL_RE = re.compile(
    r"(?:(?P<msg>Memory cgroup out of memory|Out of memory)(?: \([^)]*\))?: )?"
    r"[Kk]ill process (?P<pid>\d+) \((?P<rest>.*)$"
)
_KILL_TAIL_RE = re.compile(r"^ score (-?\d+) or (?:sacrifice child|a child)")
_KILLED_RE = re.compile(
    r"(?:(?P<msg>Memory cgroup out of memory|Out of memory)(?: \([^)]*\))?: )?"
    r"Killed process (?P<pid>\d+)(?:, UID (?P<uid1>\d+),)? \((?P<rest>.*)$"
)
_REAPER_RE = re.compile(r"oom_reaper: reaped process (\d+)")
_TASK_IN_RE = re.compile(r"^Task in (?P<task>.*?) killed as a result of limit of (?P<oom>.*)$")
_GROUP_RE = re.compile(r"^Tasks in (?P<cg>.*) are going to be killed due to memory\.oom\.group")
_SUMMARY_RE = re.compile(r"oom-kill:(?=constraint=)")
_SUMMARY_FRAGMENT_RE = re.compile(r"^,(?:oom_memcg=|global_oom|task_memcg=|task=)")

_KB_FIELDS = {
    "total_vm_kb": re.compile(r"total-vm:(\d+)kB"),
    "anon_rss_kb": re.compile(r"anon-rss:(\d+)kB"),
    "file_rss_kb": re.compile(r"file-rss:(\d+)kB"),
    "shmem_rss_kb": re.compile(r"shmem-rss:(\d+)kB"),
    "pgtables_kb": re.compile(r"pgtables:(\d+)kB"),
}
_UID_RE = re.compile(r"UID[: ](\d+)")
_ADJ_RE = re.compile(r"oom_score_adj:(-?\d+)")

# What may follow the ")" closing a comm in the lines above; used to pick the right ")"
# when the name itself contains one.
_AFTER_COMM_RE = re.compile(r"\)(?=$| score | total-vm:|, UID |, total-vm|, now | vsz:)")

#: Most lines kept per event in ``OomEvent.lines`` (a report's task list can be huge).
MAX_EVENT_LINES = 64
#: Most closed events kept waiting for a late ``oom_reaper`` line.
MAX_HELD_EVENTS = 64

_EVIDENCE_PREFIXES = ("memory: usage", "memory+swap: usage", "swap: usage", "kmem: usage")


def _split_comm(rest: str) -> tuple[str | None, str]:
    """Split ``comm) tail`` at the ``)`` that closes the process name."""
    matches = list(_AFTER_COMM_RE.finditer(rest))
    end = matches[-1].start() if matches else rest.rfind(")")
    if end < 0:
        return None, ""  # cut inside the name
    return rest[:end], rest[end + 1 :]


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _parse_summary(body: str) -> dict[str, object]:
    """Parse the fields of an ``oom-kill:`` summary line (or a continuation of it).

    Values may contain commas (``mems_allowed=0-1,3``, cgroup names), so each value runs
    up to the next known key rather than to the next comma.
    """
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


def _type_for_message(msg: str | None) -> str | None:
    if msg == "Memory cgroup out of memory":
        return "memcg"
    if msg == "Out of memory":
        return "global"
    return None


class _Builder:
    """A mutable event under construction."""

    def __init__(self, timestamp: float | None) -> None:
        self.fields: dict[str, object] = {}
        self.timestamp = timestamp
        self.lines: list[str] = []
        self.killed_seen = False  # a "Killed process" line confirmed the victim
        self.group_member = False  # killed as a member of a memory.oom.group
        self.group_active = False  # the "Tasks in ... oom.group" line was seen
        self.group_pids: set[int] = set()

    def get(self, key: str) -> object:
        return self.fields.get(key)

    def set(self, key: str, value: object, *, override: bool = True) -> None:
        if value is None:
            return
        if override or self.fields.get(key) is None:
            self.fields[key] = value

    def is_empty(self) -> bool:
        return not self.fields and not self.killed_seen

    def add_line(self, raw: str, stamp: float | None) -> None:
        if self.timestamp is None and stamp is not None:
            self.timestamp = stamp
        if len(self.lines) < MAX_EVENT_LINES:
            self.lines.append(raw)

    def _int(self, key: str) -> int | None:
        value = self.fields.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _str(self, key: str) -> str | None:
        value = self.fields.get(key)
        return value if isinstance(value, str) else None

    def build(self) -> OomEvent:
        oom_type = self._str("oom_type")
        constraint = self._str("constraint")
        if constraint == "CONSTRAINT_MEMCG":
            oom_type = "memcg"
        elif oom_type is None and (constraint == "CONSTRAINT_NONE" or self.get("global_oom")):
            oom_type = "global"
        return OomEvent(
            oom_type=oom_type,
            constraint=constraint,
            invoker_comm=self._str("invoker_comm"),
            invoker_pid=self._int("invoker_pid"),
            selected_pid=self._int("selected_pid"),
            score=self._int("score"),
            victim_pid=self._int("victim_pid"),
            victim_comm=self._str("victim_comm"),
            oom_memcg=self._str("oom_memcg"),
            task_memcg=self._str("task_memcg"),
            total_vm_kb=self._int("total_vm_kb"),
            anon_rss_kb=self._int("anon_rss_kb"),
            file_rss_kb=self._int("file_rss_kb"),
            shmem_rss_kb=self._int("shmem_rss_kb"),
            uid=self._int("uid"),
            pgtables_kb=self._int("pgtables_kb"),
            oom_score_adj=self._int("oom_score_adj"),
            reaped=bool(self.get("reaped")),
            oom_group=bool(self.get("oom_group")),
            timestamp=self.timestamp,
            lines=tuple(self.lines),
        )


class OomLogParser:
    """Incremental parser: feed kernel log lines, get :class:`OomEvent` records back.

    An event starts at an ``invoked oom-killer`` line, or at the first line of a report
    whose beginning was cut off. It is complete when the next event starts; it is handed
    out (by :meth:`feed`) once the next event has named its victim, so that an
    ``oom_reaper`` line printed while the next report is being written still reaches it.
    :meth:`flush` hands out everything left at the end of the input, :meth:`partial`
    shows the event being assembled. ``feed`` and ``flush`` never raise.
    """

    def __init__(self) -> None:
        self._current: _Builder | None = None
        self._held: list[_Builder] = []

    # -- public ---------------------------------------------------------------------------

    def feed(self, line: str) -> list[OomEvent]:
        """Take one log line; return the events this line completed (often none)."""
        try:
            return self._feed(line)
        except Exception:  # pragma: no cover - defensive: untrusted text must not raise
            return []

    def partial(self) -> OomEvent | None:
        """The event being assembled now, if any."""
        if self._current is None or self._current.is_empty():
            return None
        return self._current.build()

    def pending(self) -> list[OomEvent]:
        """Every event not handed out yet, oldest first (held ones and the partial one)."""
        out = [b.build() for b in self._held]
        current = self.partial()
        if current is not None:
            out.append(current)
        return out

    def flush(self) -> list[OomEvent]:
        """End of input: return the events not handed out yet, and start afresh."""
        out = self.pending()
        self._current = None
        self._held = []
        return out

    # -- internals --------------------------------------------------------------------------

    def _feed(self, line: str) -> list[OomEvent]:
        out: list[OomEvent] = []
        for piece in line.rstrip("\r\n").split("\n"):
            normalized = normalize_line(piece)
            if normalized is None:
                continue
            text, stamp = normalized
            # A journal record: keep its message as the event's line, not the JSON.
            raw = piece.rstrip("\r") if not piece.startswith("{") else None
            for part in text.split("\n"):
                out.extend(self._feed_text(part, stamp, part if raw is None else raw))
        return out

    def _start(self, stamp: float | None) -> _Builder:
        """Close the current event (if it holds anything) and open a new one."""
        if self._current is not None and not self._current.is_empty():
            self._held.append(self._current)
        self._current = _Builder(stamp)
        return self._current

    def _release_held(self) -> list[OomEvent]:
        out = [b.build() for b in self._held]
        self._held = []
        return out

    def _overflow(self) -> list[OomEvent]:
        if len(self._held) <= MAX_HELD_EVENTS:
            return []
        extra = self._held[:-MAX_HELD_EVENTS]
        self._held = self._held[-MAX_HELD_EVENTS:]
        return [b.build() for b in extra]

    def _cur(self, stamp: float | None) -> _Builder:
        if self._current is None:
            self._current = _Builder(stamp)
        return self._current

    def _feed_text(self, text: str, stamp: float | None, raw: str) -> list[OomEvent]:
        stripped = text.strip()
        if not stripped:
            return []
        out: list[OomEvent] = []

        if "invoked oom-killer:" in text:
            m = _INVOKER_RE.search(stripped)
            b = self._start(stamp)
            b.set("invoker_comm", m.group("comm") if m else None)
            b.add_line(raw, stamp)
            return self._overflow()

        m = _REAPER_RE.search(text)
        if m is not None:
            self._reaped(int(m.group(1)), raw, stamp)
            return []

        m = _KILLED_RE.search(text)
        if m is not None:
            return self._killed(m, raw, stamp)

        m = _KILL_RE.search(text)
        if m is not None:
            _comm, tail = _split_comm(m.group("rest"))
            tail_m = _KILL_TAIL_RE.match(tail)
            if tail_m is None:
                return []  # e.g. "Kill process N (x) sharing same memory"
            b = self._cur(stamp)
            if b.killed_seen or b.get("selected_pid") is not None:
                b = self._start(stamp)
            b.set("selected_pid", int(m.group("pid")))
            b.set("score", _int(tail_m.group(1)))
            b.set("oom_type", _type_for_message(m.group("msg")), override=False)
            b.add_line(raw, stamp)
            return out

        m = _SUMMARY_RE.search(text)
        if m is not None:
            fields = _parse_summary(text[m.end() :])
            b = self._cur(stamp)
            if (
                b.killed_seen
                or b.get("constraint") is not None
                or b.get("selected_pid") is not None
            ):
                b = self._start(stamp)
            self._apply_summary(b, fields)
            b.add_line(raw, stamp)
            return out

        if _SUMMARY_FRAGMENT_RE.match(stripped) and self._current is not None:
            # A piece of the summary line that /dev/kmsg split off (pr_cont interleaving).
            self._apply_summary(self._current, _parse_summary(stripped))
            self._current.add_line(raw, stamp)
            return out

        m = _TASK_IN_RE.match(stripped)
        if m is not None:
            b = self._cur(stamp)
            if b.killed_seen or b.get("selected_pid") is not None or b.get("task_memcg"):
                b = self._start(stamp)
            b.set("task_memcg", m.group("task"))
            b.set("oom_memcg", m.group("oom"))
            b.set("oom_type", "memcg", override=False)
            b.add_line(raw, stamp)
            return out

        m = _GROUP_RE.match(stripped)
        if m is not None:
            b = self._cur(stamp)
            b.set("oom_group", True)
            b.group_active = True
            b.add_line(raw, stamp)
            return out

        b0 = self._current
        if b0 is None or b0.killed_seen:
            return out
        m = _CPU_PID_RE.search(text)
        if m is not None:
            if b0.get("invoker_comm") is not None and b0.get("invoker_pid") is None:
                b0.set("invoker_pid", _int(m.group(1) or m.group(2)))
                b0.add_line(raw, stamp)
            return out
        if stripped.startswith(_EVIDENCE_PREFIXES):
            b0.add_line(raw, stamp)  # the limit that was hit: worth keeping as evidence
        return out

    @staticmethod
    def _apply_summary(b: _Builder, fields: dict[str, object]) -> None:
        b.set("constraint", fields.get("constraint"))
        if fields.get("global_oom"):
            b.set("global_oom", True)
        b.set("oom_memcg", fields.get("oom_memcg"))
        b.set("task_memcg", fields.get("task_memcg"))
        if not b.killed_seen:
            # The summary names the chosen task: the victim unless a "Killed process"
            # line (which wins) says a child was sacrificed instead.
            b.set("victim_pid", fields.get("pid"))
            b.set("victim_comm", fields.get("task"))
            b.set("uid", fields.get("uid"))

    def _killed(self, m: re.Match[str], raw: str, stamp: float | None) -> list[OomEvent]:
        pid = int(m.group("pid"))
        comm, tail = _split_comm(m.group("rest"))
        b = self._cur(stamp)
        out: list[OomEvent] = []
        if b.killed_seen:
            if b.group_active or b.group_member:
                if pid in b.group_pids:
                    return []  # the group kill names the victim again
                parent = b
                b = self._start(stamp)
                b.group_member = True
                b.group_active = True
                b.group_pids = parent.group_pids
                for key in ("oom_type", "constraint", "invoker_comm", "invoker_pid"):
                    b.set(key, parent.get(key))
                b.set("oom_memcg", parent.get("oom_memcg"))
                b.set("oom_group", True)
            else:
                b = self._start(stamp)
        b.killed_seen = True
        b.group_pids.add(pid)
        if b.get("victim_pid") not in (None, pid):
            # The summary's task was not the one killed (a sacrificed child): its
            # uid and name belong to the other process.
            b.fields.pop("uid", None)
            b.fields.pop("victim_comm", None)
            b.fields.pop("task_memcg", None)
        b.set("victim_pid", pid)
        b.set("victim_comm", comm)
        b.set("oom_type", _type_for_message(m.group("msg")), override=False)
        for key, regex in _KB_FIELDS.items():
            found = regex.search(tail)
            if found:
                b.set(key, int(found.group(1)))
        uid = m.group("uid1")
        found = _UID_RE.search(tail)
        b.set("uid", _int(uid) if uid is not None else (_int(found.group(1)) if found else None))
        found = _ADJ_RE.search(tail)
        if found:
            b.set("oom_score_adj", int(found.group(1)))
        b.add_line(raw, stamp)
        if not b.group_member:
            # A new report has reached its kill: earlier reports are finished.
            out.extend(b2.build() for b2 in self._held)
            self._held = []
        out.extend(self._overflow())
        return out

    def _reaped(self, pid: int, raw: str, stamp: float | None) -> None:
        candidates = [*self._held, *([self._current] if self._current else [])]
        for b in reversed(candidates):
            if b.get("victim_pid") == pid:
                b.set("reaped", True)
                b.add_line(raw, stamp)
                return


def parse_lines(lines: Iterable[str]) -> list[OomEvent]:
    """Parse every OOM event in ``lines`` (any of the supported log forms)."""
    parser = OomLogParser()
    events: list[OomEvent] = []
    for line in lines:
        events.extend(parser.feed(line))
    events.extend(parser.flush())
    return events


def parse_text(text: str) -> list[OomEvent]:
    """Parse every OOM event in a block of log text."""
    return parse_lines(text.splitlines())


def event_from_json(data: dict[str, object]) -> OomEvent:
    """Rebuild an event from :meth:`OomEvent.to_json` output (``lines`` left empty)."""
    names = {f.name for f in dataclasses.fields(OomEvent)} - {"lines"}
    return OomEvent(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]
