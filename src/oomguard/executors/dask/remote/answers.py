"""What the cluster answers: the vocabulary that crosses from the Dask workers and their
nannies back to the executor.

:func:`~.tasks.run_calls` returns one :class:`GroupAnswer`, with one :class:`Outcome` per
attempt: frozen dataclasses of plain values, pickled by distributed, cheap (the payload is
already the pickled result, as the store keeps it). A nanny publishes a
:class:`DeathRecord` when its worker process dies, as a scheduler event: JSON on the wire
(:meth:`DeathRecord.to_json`), read back once (:meth:`DeathRecord.from_json`). What the
executor sends, call items, is :mod:`oomguard.worker.calls`.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import SupportsIndex, TypeAlias

from oomguard.cgroups.cgroup import CgroupCounters
from oomguard.jobs.jsonvalue import JSON
from oomguard.kernlog.event import OomEvent, event_from_json

Evidence: TypeAlias = "dict[str, object]"

#: a result at least this large leaves a Dask worker as a buffer of its own (out of band)
OUT_OF_BAND_BYTES = 64 * 1024


@dataclass(frozen=True)
class Outcome:
    """One attempt of a group: its result (``payload``, pickled) or its failure, or
    ``requeue``: it never began (the child died before it, or it was killed first)."""

    attempt_id: int
    ok: bool = False
    payload: bytes | None = None
    failure_class: str | None = None
    message: str | None = None
    evidence: Evidence = field(default_factory=dict)
    peak: int | None = None
    #: the process that ran it: the child, or the Dask worker itself
    pid: int | None = None
    requeue: bool = False

    @classmethod
    def requeued(cls, attempt_id: int) -> Outcome:
        return cls(attempt_id, requeue=True)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[object, ...]:
        # Its fields in order, a large payload as a PickleBuffer: distributed pickles an
        # answer with protocol 5 and a buffer callback where both ends speak it (a Dask
        # worker to the executor's client, gathered directly), so the result is sent from
        # the bytes the child sent, not copied into the pickle first.
        data = self.payload
        payload: bytes | pickle.PickleBuffer | None = data
        if data is not None and int(protocol) >= 5 and len(data) >= OUT_OF_BAND_BYTES:
            payload = pickle.PickleBuffer(data)
        return _outcome, (
            self.attempt_id,
            self.ok,
            payload,
            self.failure_class,
            self.message,
            self.evidence,
            self.peak,
            self.pid,
            self.requeue,
        )


def _outcome(
    attempt_id: int,
    ok: bool,
    payload: bytes | memoryview | None,
    failure_class: str | None,
    message: str | None,
    evidence: Evidence,
    peak: int | None,
    pid: int | None,
    requeue: bool,
) -> Outcome:
    """An :class:`Outcome` unpickled; an out-of-band payload (a view of the frame it came
    in) becomes bytes, as the store keeps it."""
    if payload is not None and not isinstance(payload, bytes):
        payload = bytes(payload)
    return Outcome(attempt_id, ok, payload, failure_class, message, evidence, peak, pid, requeue)


@dataclass(frozen=True)
class GroupAnswer:
    """What a Dask task (a group of attempts) answers.

    ``duplicate``: the key had started before (Dask reran it): nothing ran. ``missing``: a
    result an aggregation refers to is no longer held here: nothing ran.
    """

    #: the Dask worker's address, and its process
    worker: str | None
    pid: int
    outcomes: tuple[Outcome, ...] = ()
    #: the Dask worker's resident memory after the group, and after its start-up
    rss_after: int | None = None
    baseline: int | None = None
    #: how the group ran: ``cgroup-v1``, ``cgroup-v2``, ``watchdog`` or ``thread``
    isolation: str | None = None
    #: children recycled while it ran, by reason
    recycled: Mapping[str, int] = field(default_factory=dict)
    #: attempts whose results are now held on this worker, and those it dropped
    held: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    #: results its aggregations took from the other workers holding them
    fetched: int = 0
    duplicate: bool = False
    missing: bool = False


def as_json(value: object) -> JSON:
    """``value`` as JSON (tuples as lists, keys as strings, anything else as its text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): as_json(v) for k, v in value.items()}
    return str(value)


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class CgroupReading:
    """A memory cgroup's counters as a nanny read them, and which cgroup it was."""

    path: str
    version: int
    counters: CgroupCounters

    def to_json(self) -> dict[str, JSON]:
        return {**self.counters.to_json(), "path": self.path, "version": self.version}

    @classmethod
    def from_json(cls, data: object) -> CgroupReading | None:
        if not isinstance(data, Mapping):
            return None
        path, version = _str(data.get("path")), _int(data.get("version"))
        if path is None or version is None:
            return None
        counters = CgroupCounters(
            _int(data.get("oom")),
            _int(data.get("oom_kill")),
            _int(data.get("usage_bytes")),
            _int(data.get("peak_bytes")),
            _int(data.get("limit_bytes")),
        )
        return cls(path, version, counters)


@dataclass(frozen=True)
class WorkerProgress:
    """The attempt of its group a Dask worker started last (:mod:`.progress`)."""

    key: str
    index: int


@dataclass(frozen=True)
class DeathRecord:
    """A nanny's record of its worker process's death: exit code, last and peak RSS,
    its cgroup's counters before and after, whether the nanny terminated it for its
    memory limit, why the kernel log was unreadable (None: it was read), where in its
    group it was, and the kernel's OOM report for the pid."""

    pid: int
    start_time: int | None = None
    worker: str | None = None
    exitcode: int | None = None
    rss: int | None = None
    peak_rss: int | None = None
    memory_limit: int | None = None
    counters_before: CgroupReading | None = None
    counters_after: CgroupReading | None = None
    nanny_terminated: bool = False
    kernel_log: str | None = None
    progress: WorkerProgress | None = None
    kernel: OomEvent | None = None
    kernel_lines: tuple[str, ...] = ()

    def to_json(self) -> dict[str, JSON]:
        """The record as the scheduler event carries it (msgpack-able)."""
        before, after, progress = self.counters_before, self.counters_after, self.progress
        out: dict[str, JSON] = {
            "pid": self.pid,
            "start_time": self.start_time,
            "worker": self.worker,
            "counters_before": None if before is None else before.to_json(),
            "rss": self.rss,
            "peak_rss": self.peak_rss,
            "exitcode": self.exitcode,
            "counters_after": None if after is None else after.to_json(),
            "memory_limit": self.memory_limit,
            "nanny_terminated": self.nanny_terminated,
            "kernel_log": self.kernel_log,
            "progress": None
            if progress is None
            else {"key": progress.key, "index": progress.index},
        }
        if self.kernel is not None:
            out["kernel"] = as_json(self.kernel.to_json())
            out["kernel_lines"] = list(self.kernel_lines)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> DeathRecord | None:
        """The record in a scheduler event (None: not one, no pid)."""
        pid = _int(data.get("pid"))
        if pid is None:
            return None
        progress, kernel = data.get("progress"), data.get("kernel")
        key = _str(progress.get("key")) if isinstance(progress, Mapping) else None
        index = _int(progress.get("index")) if isinstance(progress, Mapping) else None
        lines = data.get("kernel_lines")
        return cls(
            pid=pid,
            start_time=_int(data.get("start_time")),
            worker=_str(data.get("worker")),
            exitcode=_int(data.get("exitcode")),
            rss=_int(data.get("rss")),
            peak_rss=_int(data.get("peak_rss")),
            memory_limit=_int(data.get("memory_limit")),
            counters_before=CgroupReading.from_json(data.get("counters_before")),
            counters_after=CgroupReading.from_json(data.get("counters_after")),
            nanny_terminated=data.get("nanny_terminated") is True,
            kernel_log=_str(data.get("kernel_log")),
            progress=None if key is None or index is None else WorkerProgress(key, index),
            kernel=event_from_json(dict(kernel)) if isinstance(kernel, Mapping) else None,
            kernel_lines=tuple(map(str, lines)) if isinstance(lines, (list, tuple)) else (),
        )


__all__ = [
    "JSON",
    "CgroupReading",
    "DeathRecord",
    "Evidence",
    "GroupAnswer",
    "Outcome",
    "WorkerProgress",
    "as_json",
]
