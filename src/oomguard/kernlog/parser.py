"""Parse kernel OOM-killer reports into :class:`OomEvent` records.

The kernel prints one report per kill, spread over many lines, in formats that changed
between 3.10 and 6.x (see ``mm/oom_kill.c`` and ``mm/memcontrol.c``). The lines that
matter, in the order a report prints them::

    python invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
    CPU: 1 PID: 3128 Comm: python Not tainted 6.1.0 #1
    Task in /a killed as a result of limit of /a                     (v1, < 4.19)
    [ pid ]   uid  tgid total_vm      rss ... oom_score_adj name     (the task table)
    [ 3128]     0  3128    25000    16000 ...           800 python
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
:mod:`oomguard.kernlog.formats`, the event in :mod:`oomguard.kernlog.event`; the package
re-exports the public names of all of them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable

from oomguard.kernlog.event import EventBuilder, OomEvent
from oomguard.kernlog.formats import (
    ADJ_RE,
    CPU_PID_RE,
    EVIDENCE_PREFIXES,
    GROUP_RE,
    INVOKED,
    INVOKER_RE,
    KB_FIELDS,
    KILL_RE,
    KILL_SCORE_RE,
    KILL_TAIL_RE,
    KILLED_RE,
    MESSAGE_ONLY_RE,
    REAPER_RE,
    SUMMARY_FRAGMENT_RE,
    SUMMARY_PIECE_RE,
    SUMMARY_RE,
    TASK_IN_RE,
    UID_RE,
    LineAssembler,
    LineForm,
    is_cut_kill,
    parse_summary,
    parse_task_header,
    parse_task_row,
    split_comm,
    to_int,
    type_for_message,
)

__all__ = ["OomLogParser", "parse_lines", "parse_text"]

#: Most closed events kept waiting for a late ``oom_reaper`` line.
MAX_HELD_EVENTS = 64


class OomLogParser:
    """Incremental parser: feed kernel log lines, get :class:`OomEvent` records back.

    An event starts at an ``invoked oom-killer`` line, or at the first line of a report
    whose beginning was cut off. It is complete when the next event starts; it is handed
    out (by :meth:`feed`) once the next event has named its victim, so that an
    ``oom_reaper`` line printed while the next report is being written still reaches it.
    :meth:`flush` hands out everything left at the end of the input, :meth:`partial`
    shows the event being assembled. ``feed`` and ``flush`` never raise: a line the
    parser fails on is skipped and counted in :attr:`errors` (the last exception kept in
    :attr:`last_error`), so a bug shows in tests and reports instead of stopping a reader.

    A long stamped line is read one line late (see
    :class:`~oomguard.kernlog.formats.LineAssembler`): logs copied from a terminal or
    a web page arrive with long lines wrapped, and a bare line that follows is its tail.
    """

    def __init__(self) -> None:
        self._current: EventBuilder | None = None
        self._held: list[EventBuilder] = []
        self._lines = LineAssembler()
        #: Lines the parser failed on (skipped); 0 unless the parser has a bug.
        self.errors = 0
        self.last_error: Exception | None = None

    # -- public ---------------------------------------------------------------------------

    def feed(self, line: str) -> list[OomEvent]:
        """Take one log line; return the events this line completed (often none)."""
        try:
            out: list[OomEvent] = []
            for piece in line.rstrip("\r\n").split("\n"):
                for form, raw in self._lines.push(piece):
                    out.extend(self._feed_form(form, raw))
            return out
        except Exception as err:  # untrusted text must not stop the reader
            self._failed(err)
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
        except Exception as err:  # untrusted text must not stop the reader
            self._failed(err)
            return [], self

    def _failed(self, err: Exception) -> None:
        self.errors += 1
        self.last_error = err

    def _feed_form(self, form: LineForm, raw: str) -> list[OomEvent]:
        out: list[OomEvent] = []
        for part in form.text.split("\n"):
            # A journal record: keep its message as the event's line, not the JSON.
            out.extend(self._feed_text(part, form.stamp, part if form.kind == "journal" else raw))
        return out

    def _start(self, stamp: float | None) -> EventBuilder:
        """Close the current event (if it holds anything) and open a new one."""
        if self._current is not None:
            self._current.table = None  # read at its kill already; can be large
            if not self._current.is_empty():
                self._held.append(self._current)
        self._current = EventBuilder(stamp)
        return self._current

    def _overflow(self) -> list[OomEvent]:
        if len(self._held) <= MAX_HELD_EVENTS:
            return []
        extra = self._held[:-MAX_HELD_EVENTS]
        self._held = self._held[-MAX_HELD_EVENTS:]
        return [b.build() for b in extra]

    def _cur(self, stamp: float | None) -> EventBuilder:
        if self._current is None:
            self._current = EventBuilder(stamp)
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

        if self._table_line(stripped, stamp):
            return out

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
            if KILL_TAIL_RE.match(tail) is None and m.group("msg") is None:
                return []  # e.g. "Kill process N (x) sharing same memory"
            # With the message, a line cut short still names the selected task and the
            # kind of OOM (headers and lines cut in pasted logs).
            score = KILL_SCORE_RE.match(tail)
            b = self._cur(stamp)
            if b.killed_seen or b.get("selected_pid") is not None:
                b = self._start(stamp)
            b.set("selected_pid", int(m.group("pid")))
            b.set("score", to_int(score.group(1)) if score else None)
            b.set("oom_type", type_for_message(m.group("msg")), override=False)
            b.add_line(raw, stamp)
            return out

        m = MESSAGE_ONLY_RE.match(stripped)
        if m is not None and is_cut_kill(m.group("rest")):
            b = self._cur(stamp)
            if b.killed_seen or b.get("selected_pid") is not None:
                b = self._start(stamp)
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

    def _table_line(self, text: str, stamp: float | None) -> bool:
        """Take a line of the task table (its header or a row); False for other lines."""
        current = self._current
        if current is not None and current.table_columns is not None and not current.killed_seen:
            row = parse_task_row(text, current.table_columns)
            if row is not None:
                current.add_task_row(*row)
                return True
        columns = parse_task_header(text)
        if columns is None:
            return False
        b = self._cur(stamp)
        if b.killed_seen or b.table_columns is not None:
            b = self._start(stamp)
        b.start_table(columns)
        return True

    @staticmethod
    def _apply_summary(b: EventBuilder, fields: dict[str, object]) -> None:
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
                parent, table = b, b.table
                b = self._start(stamp)
                b.table = table  # the members are rows of the same task table
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
        # Kernels before oom_score_adj:%hd on this line print it in the task table only.
        b.set("oom_score_adj", int(found.group(1)) if found else b.table_adj(pid))
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
