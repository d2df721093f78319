"""What the scheduler tells the outside world: frozen notices, and their fields as JSON.

An :class:`AttemptNotice` is made for every attempt that ends (succeeded, failed, stopped),
a :class:`JobNotice` for every change of a job's state as the scheduler sees it (it became
active; it finished). Each channel (Sentry, webhooks, JSON logs) renders the same fields
(:func:`notice_fields`), so a key means the same thing wherever it is read.

A notice holds bounded text only (messages, tracebacks and kernel lines are cut to the
limits below): a full queue of notices costs a known amount of memory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from oomguard.errors import OomguardError
from oomguard.jobs.jsonvalue import JSON, JSONObject

if TYPE_CHECKING:
    from oomguard.store.protocol import Store

log = logging.getLogger("oomguard.notify")

#: outcomes of an attempt
OUTCOMES = ("succeeded", "retrying", "failed", "interrupted", "cancelled")
#: job states a JobNotice reports
JOB_STATES = ("running", "succeeded", "failed", "cancelled")

#: most characters kept of a message
MAX_MESSAGE = 2000
#: most characters kept of a traceback (its end: the frame that raised)
MAX_TRACEBACK = 8000
#: most kernel lines kept, and characters of each
MAX_KERNEL_LINES = 64
MAX_KERNEL_LINE = 512
#: evidence keys copied into a notice (scalars that say how a worker died)
EVIDENCE_KEYS = (
    "signal",
    "signal_name",
    "exit_code",
    "killed_by_oomguard",
    "timeout_s",
    "pid",
    "cgroup",
    "maxrss_bytes",
    "kernel_log",
    "elapsed_s",
    "survivor",
)
MAX_EVIDENCE_TEXT = 300
#: about the bytes of a notice besides its text
NOTICE_OVERHEAD = 1024


@dataclass(frozen=True)
class AttemptNotice:
    """One attempt ended. ``outcome``:

    * ``succeeded``;
    * ``retrying``: it failed with ``failure_class`` and its task runs again (``retry_at``);
    * ``failed``: it failed and its task failed for good, as ``final_class``
      (``needs_more_memory`` for an OOM kill at the most oomguard can give);
    * ``interrupted``: the scheduler stopped (not the task's fault);
    * ``cancelled``: its task was cancelled and its worker killed.
    """

    job_id: str
    task_id: int
    attempt_id: int
    #: the attempt's number for its task (1 for the first)
    attempt: int
    #: the task's function (``module:function``)
    function: str
    outcome: str
    failure_class: str | None = None
    final_class: str | None = None
    message: str | None = None
    memory_key: str | None = None
    limit_bytes: int | None = None
    peak_bytes: int | None = None
    worker: str | None = None
    retry_at: float | None = None
    #: the kernel's OOM report (OOM classes), as the kernel log has it
    kernel_lines: tuple[str, ...] = ()
    #: the task's traceback (``error``, ``memory_error``) or oomguard's own (internal errors)
    traceback: str | None = None
    #: a few scalars of the attempt's evidence (signal, exit code, who killed it)
    evidence: Mapping[str, JSON] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    @property
    def failed(self) -> bool:
        """The attempt failed (its task retried or failed for good)."""
        return self.outcome in ("retrying", "failed")

    @property
    def final(self) -> bool:
        """The task failed for good with this attempt."""
        return self.outcome == "failed"

    @property
    def weight(self) -> int:
        """About the bytes this notice holds (for the queues' byte bound)."""
        return (
            NOTICE_OVERHEAD
            + len(self.message or "")
            + len(self.traceback or "")
            + sum(len(line) for line in self.kernel_lines)
        )

    @property
    def group_class(self) -> str | None:
        """The class notifications group by: the task's final class once it failed for
        good (``needs_more_memory`` is its own issue), else the attempt's class."""
        return self.final_class if self.final else self.failure_class

    @classmethod
    def of(
        cls,
        *,
        job_id: str,
        task_id: int,
        attempt_id: int,
        attempt: int,
        function: str,
        outcome: str,
        failure_class: str | None = None,
        final_class: str | None = None,
        message: str | None = None,
        memory_key: str | None = None,
        limit_bytes: int | None = None,
        peak_bytes: int | None = None,
        worker: str | None = None,
        retry_at: float | None = None,
        evidence: Mapping[str, object] | None = None,
    ) -> AttemptNotice:
        """A notice with ``evidence`` reduced to what notifications carry, bounded."""
        evidence = evidence or {}
        kernel = evidence.get("kernel_lines") or ()
        trace = evidence.get("traceback") or evidence.get("internal_error")
        if isinstance(trace, list):
            trace = "\n".join(str(line) for line in trace)
        worker = worker or _text(evidence.get("worker"), 200)
        return cls(
            job_id=job_id,
            task_id=task_id,
            attempt_id=attempt_id,
            attempt=attempt,
            function=function,
            outcome=outcome,
            failure_class=failure_class,
            final_class=final_class,
            message=_text(message, MAX_MESSAGE),
            memory_key=memory_key,
            limit_bytes=limit_bytes,
            peak_bytes=peak_bytes,
            worker=worker,
            retry_at=retry_at,
            kernel_lines=kernel_excerpt(kernel),
            traceback=_tail(trace, MAX_TRACEBACK) if isinstance(trace, str) else None,
            evidence=_scalars(evidence),
        )


@dataclass(frozen=True)
class JobNotice:
    """A job's state changed, as the scheduler saw it: it became active (``running``) or
    it finished (``succeeded``, ``failed``: some task failed for good, ``cancelled``)."""

    job_id: str
    name: str | None
    namespace: str | None
    function: str | None
    state: str
    tasks: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)
    failures_by_class: Mapping[str, int] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        return self.state != "running"

    @property
    def weight(self) -> int:
        return NOTICE_OVERHEAD + 64 * (len(self.counts) + len(self.failures_by_class))


Notice = AttemptNotice | JobNotice


def weigh(notice: Notice) -> int:
    """:attr:`AttemptNotice.weight` or :attr:`JobNotice.weight`."""
    return notice.weight


def kernel_excerpt(lines: object) -> tuple[str, ...]:
    """At most :data:`MAX_KERNEL_LINES` lines, each cut to :data:`MAX_KERNEL_LINE`
    characters; a longer report keeps its start and its end (the ``Killed process`` line)."""
    if not isinstance(lines, (list, tuple)):
        return ()
    text = [str(line)[:MAX_KERNEL_LINE] for line in lines]
    if len(text) > MAX_KERNEL_LINES:
        head = MAX_KERNEL_LINES // 4
        text = text[:head] + text[len(text) - (MAX_KERNEL_LINES - head) :]
    return tuple(text)


def notice_fields(notice: Notice) -> JSONObject:
    """The notice's fields as JSON-ready values, with the same keys, always present (null
    when they do not apply), for every channel. See README "Notifications"."""
    if isinstance(notice, JobNotice):
        return {
            "job_id": notice.job_id,
            "job_name": notice.name,
            "namespace": notice.namespace,
            "function": notice.function,
            "state": notice.state,
            "tasks": notice.tasks,
            "counts": dict(notice.counts),
            "failures_by_class": dict(notice.failures_by_class),
        }
    return {
        "job_id": notice.job_id,
        "task_id": notice.task_id,
        "attempt_id": notice.attempt_id,
        "attempt": notice.attempt,
        "function": notice.function,
        "outcome": notice.outcome,
        "failure_class": notice.failure_class,
        "final_class": notice.final_class,
        "message": notice.message,
        "memory_key": notice.memory_key,
        "limit_bytes": notice.limit_bytes,
        "peak_bytes": notice.peak_bytes,
        "worker": notice.worker,
        "retry_at": notice.retry_at,
        "kernel_lines": list(notice.kernel_lines),
        "traceback": notice.traceback,
        "evidence": dict(notice.evidence),
    }


def summary(notice: Notice) -> str:
    """One line for people (a Slack message, an issue title): a command is named by its
    label (``cmd:PROGRAM``), never its argument template."""
    from oomguard.jobs.command import label
    from oomguard.units import format_size

    if isinstance(notice, JobNotice):
        failed = notice.counts.get("failed", 0)
        text = f"job {notice.name or notice.job_id} {notice.state}: {notice.tasks} task(s)"
        if failed:
            classes = ", ".join(f"{k} {v}" for k, v in sorted(notice.failures_by_class.items()))
            text += f", {failed} failed" + (f" (failed attempts: {classes})" if classes else "")
        return text
    what = {
        "succeeded": "succeeded",
        "retrying": f"failed ({notice.failure_class}), will be retried",
        "failed": f"failed for good ({notice.final_class})",
        "interrupted": "was interrupted",
        "cancelled": "was cancelled",
    }.get(notice.outcome, notice.outcome)
    text = f"{label(notice.function)}: task {notice.task_id} attempt {notice.attempt} {what}"
    if notice.failed and notice.limit_bytes:
        text += f"; limit {format_size(notice.limit_bytes)}"
        if notice.peak_bytes:
            text += f", peak {format_size(notice.peak_bytes)}"
    if notice.failed and notice.message and notice.message != notice.failure_class:
        text += f": {notice.message.splitlines()[0] if notice.message.strip() else ''}"
    return text


def to_json(notice: Notice) -> tuple[str, str]:
    """``(kind, JSON text)`` of ``notice``, as the store's outbox keeps it
    (:func:`from_json` makes it again)."""
    fields = {f.name: getattr(notice, f.name) for f in dataclasses.fields(notice)}
    kind = "job" if isinstance(notice, JobNotice) else "attempt"
    return kind, json.dumps(fields, separators=(",", ":"), default=str)


def from_json(kind: str, fields: Mapping[str, object]) -> Notice:
    """The notice :func:`to_json` wrote (``fields``: its JSON, parsed)."""
    if kind == "job":
        return _by_name(JobNotice, fields)
    values = dict(fields)
    lines = values.get("kernel_lines")
    values["kernel_lines"] = tuple(lines) if isinstance(lines, list | tuple) else ()
    return _by_name(AttemptNotice, values)


def _by_name(make: Callable[..., Notice], values: Mapping[str, object]) -> Notice:
    # Each field's value is what to_json wrote for it, which mypy cannot follow through
    # the mapping: the dataclass checks nothing more than it did.
    return make(**values)


def rfc3339(at: float) -> str:
    """``at`` (a Unix time) as RFC 3339 in UTC, to the millisecond."""
    stamp = datetime.fromtimestamp(at, tz=timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _text(value: object, limit: int) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…" + text[len(text) - limit + 1 :]


def _scalars(evidence: Mapping[str, object]) -> JSONObject:
    out: JSONObject = {}
    for key in EVIDENCE_KEYS:
        value = evidence.get(key)
        if value is None:
            continue
        if isinstance(value, (bool, int, float)):
            out[key] = value
        else:
            out[key] = _text(value, MAX_EVIDENCE_TEXT)
    return out


def job_notices(store: Store, before: list[str], active: list[str]) -> Iterator[JobNotice]:
    """Notices of the jobs that became active (``running``) or finished (their final state)
    between two looks at the active jobs, ``before`` and ``active``."""
    was, now = set(before), set(active)
    for job_id in [j for j in active if j not in was] + sorted(was - now):
        try:
            s = store.queries.job_status(job_id)
        except OomguardError:  # a job forgotten meanwhile: nothing to tell
            log.debug("no notice for job %s", job_id, exc_info=True)
            continue
        yield JobNotice(
            job_id=job_id,
            name=s.name,
            namespace=s.namespace,
            function=s.fn,
            state="running" if job_id in now else s.state,
            tasks=s.tasks,
            counts=s.counts,
            failures_by_class=s.failures_by_class,
        )
