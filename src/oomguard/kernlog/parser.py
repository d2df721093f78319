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
:mod:`oomguard.kernlog.sources`, the line forms and the kernel's message formats in
:mod:`oomguard.kernlog.formats`; their public names are re-exported here.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass

from oomguard.kernlog.formats import (
    ADJ_RE,
    CPU_PID_RE,
    EVIDENCE_PREFIXES,
    GROUP_RE,
    INVOKED,
    INVOKER_RE,
    KB_FIELDS,
    KILL_RE,
    KILL_TAIL_RE,
    KILLED_RE,
    REAPER_RE,
    SUMMARY_FRAGMENT_RE,
    SUMMARY_PIECE_RE,
    SUMMARY_RE,
    TASK_IN_RE,
    UID_RE,
    LineAssembler,
    LineForm,
    normalize_line,
    parse_summary,
    split_comm,
    to_int,
    type_for_message,
)
from oomguard.kernlog.sources import KernelLogFollower, iter_source_lines

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


#: Most lines kept per event in ``OomEvent.lines`` (a report's task list can be huge).
MAX_EVENT_LINES = 64
#: Most closed events kept waiting for a late ``oom_reaper`` line.
MAX_HELD_EVENTS = 64


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

    A long stamped line is read one line late (see
    :class:`~oomguard.kernlog.formats.LineAssembler`): logs copied from a terminal or
    a web page arrive with long lines wrapped, and a bare line that follows is its tail.
    """

    def __init__(self) -> None:
        self._current: _Builder | None = None
        self._held: list[_Builder] = []
        self._lines = LineAssembler()

    # -- public ---------------------------------------------------------------------------

    def feed(self, line: str) -> list[OomEvent]:
        """Take one log line; return the events this line completed (often none)."""
        try:
            out: list[OomEvent] = []
            for piece in line.rstrip("\r\n").split("\n"):
                for form, raw in self._lines.push(piece):
                    out.extend(self._feed_form(form, raw))
            return out
        except Exception:  # pragma: no cover - defensive: untrusted text must not raise
            return []

    def partial(self) -> OomEvent | None:
        """The event being assembled now, if any."""
        current = self._settled()[1]._current
        return None if current is None or current.is_empty() else current.build()

    def pending(self) -> list[OomEvent]:
        """Every event not handed out yet, oldest first (held ones and the partial one)."""
        released, settled = self._settled()
        out = released + [b.build() for b in settled._held]
        current = settled._current
        if current is not None and not current.is_empty():
            out.append(current.build())
        return out

    def flush(self) -> list[OomEvent]:
        """End of input: return the events not handed out yet, and start afresh."""
        out = self.pending()
        self._current = None
        self._held = []
        self._lines.reset()
        return out

    # -- internals --------------------------------------------------------------------------

    def _settled(self) -> tuple[list[OomEvent], OomLogParser]:
        """The state with the line held back taken in, without changing this parser."""
        held = self._lines.held()
        if not held:
            return [], self
        clone = copy.deepcopy(self)
        try:
            return [e for form, raw in held for e in clone._feed_form(form, raw)], clone
        except Exception:  # pragma: no cover - defensive: untrusted text must not raise
            return [], self

    def _feed_form(self, form: LineForm, raw: str) -> list[OomEvent]:
        out: list[OomEvent] = []
        for part in form.text.split("\n"):
            # A journal record: keep its message as the event's line, not the JSON.
            out.extend(self._feed_text(part, form.stamp, part if form.kind == "journal" else raw))
        return out

    def _start(self, stamp: float | None) -> _Builder:
        """Close the current event (if it holds anything) and open a new one."""
        if self._current is not None and not self._current.is_empty():
            self._held.append(self._current)
        self._current = _Builder(stamp)
        return self._current

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

        if INVOKED in text:
            m = INVOKER_RE.search(stripped)
            b = self._start(stamp)
            b.set("invoker_comm", m.group("comm") if m else None)
            b.add_line(raw, stamp)
            return self._overflow()

        m = REAPER_RE.search(text)
        if m is not None:
            self._reaped(int(m.group(1)), raw, stamp)
            return []

        m = KILLED_RE.search(text)
        if m is not None:
            return self._killed(m, raw, stamp)

        m = KILL_RE.search(text)
        if m is not None:
            _comm, tail = split_comm(m.group("rest"))
            tail_m = KILL_TAIL_RE.match(tail)
            if tail_m is None:
                return []  # e.g. "Kill process N (x) sharing same memory"
            b = self._cur(stamp)
            if b.killed_seen or b.get("selected_pid") is not None:
                b = self._start(stamp)
            b.set("selected_pid", int(m.group("pid")))
            b.set("score", to_int(tail_m.group(1)))
            b.set("oom_type", type_for_message(m.group("msg")), override=False)
            b.add_line(raw, stamp)
            return out

        m = SUMMARY_RE.search(text)
        if m is not None:
            fields = parse_summary(text[m.end() :])
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

        b0 = self._current
        if b0 is not None and (
            SUMMARY_FRAGMENT_RE.match(stripped)
            or (
                SUMMARY_PIECE_RE.match(stripped)
                and b0.get("constraint") is not None
                and not b0.killed_seen
                and b0.get("victim_pid") is None
            )
        ):
            # A piece of the summary line that /dev/kmsg split off (pr_cont interleaving).
            self._apply_summary(b0, parse_summary(stripped))
            b0.add_line(raw, stamp)
            return out

        m = TASK_IN_RE.match(stripped)
        if m is not None:
            b = self._cur(stamp)
            if b.killed_seen or b.get("selected_pid") is not None or b.get("task_memcg"):
                b = self._start(stamp)
            b.set("task_memcg", m.group("task"))
            if m.group("oom") == "host":  # Alibaba Cloud Linux names a global OOM so
                b.set("oom_type", "global", override=False)
            else:
                b.set("oom_memcg", m.group("oom"))
                b.set("oom_type", "memcg", override=False)
            b.add_line(raw, stamp)
            return out

        m = GROUP_RE.match(stripped)
        if m is not None:
            b = self._cur(stamp)
            b.set("oom_group", True)
            b.group_active = True
            b.add_line(raw, stamp)
            return out

        if b0 is None or b0.killed_seen:
            return out
        m = CPU_PID_RE.search(text)
        if m is not None:
            if b0.get("invoker_comm") is not None and b0.get("invoker_pid") is None:
                b0.set("invoker_pid", to_int(m.group(1) or m.group(2)))
                b0.add_line(raw, stamp)
            return out
        if stripped.startswith(EVIDENCE_PREFIXES):
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
        comm, tail = split_comm(m.group("rest"))
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
        b.set("oom_type", type_for_message(m.group("msg")), override=False)
        for key, regex in KB_FIELDS.items():
            found = regex.search(tail)
            if found:
                b.set(key, int(found.group(1)))
        found = UID_RE.search(tail)
        b.set("uid", to_int(m.group("uid1") or (found.group(1) if found else None)))
        found = ADJ_RE.search(tail)
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
