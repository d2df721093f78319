"""One OOM kill as the kernel log tells it (:class:`OomEvent`), and its builder.

:class:`EventBuilder` is the mutable record :class:`~oomguard.kernlog.parser.OomLogParser`
fills line by line; :meth:`EventBuilder.build` turns it into the frozen event.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["JSON_KEYS", "EventBuilder", "OomEvent", "event_from_json"]

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


def event_from_json(data: dict[str, object]) -> OomEvent:
    """Rebuild an event from :meth:`OomEvent.to_json` output (``lines`` left empty)."""
    names = {f.name for f in dataclasses.fields(OomEvent)} - {"lines"}
    return OomEvent(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]


#: Most lines kept per event in ``OomEvent.lines`` (a report's task list can be huge).
MAX_EVENT_LINES = 64
#: Most task table rows remembered per report (the victim's row gives its oom_score_adj).
MAX_TASK_ROWS = 65536


class EventBuilder:
    """A mutable event under construction (the parser's, not public)."""

    def __init__(self, timestamp: float | None) -> None:
        self.fields: dict[str, object] = {}
        self.timestamp = timestamp
        self.lines: list[str] = []
        self.killed_seen = False  # a "Killed process" line confirmed the victim
        self.group_member = False  # killed as a member of a memory.oom.group
        self.group_active = False  # the "Tasks in ... oom.group" line was seen
        self.group_pids: set[int] = set()
        # The report's task table: its columns, and oom_score_adj by pid and by tgid
        # (one value per process; the kill line may name any thread of it).
        self.table_columns: tuple[str, ...] | None = None
        self.table: dict[int, int] | None = None

    def start_table(self, columns: tuple[str, ...]) -> None:
        self.table_columns = columns
        self.table = {}

    def add_task_row(self, pid: int, tgid: int | None, adj: int) -> None:
        if self.table is None or len(self.table) >= MAX_TASK_ROWS:
            return
        self.table[pid] = adj
        if tgid is not None:
            self.table.setdefault(tgid, adj)

    def table_adj(self, pid: int) -> int | None:
        """The oom_score_adj the task table gives ``pid``, if it lists it."""
        return None if self.table is None else self.table.get(pid)

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
