"""The messages between the pool and a worker process, as typed values.

The pool sends a worker a :class:`Batch` of attempts, or ``None`` (exit). A worker says
:class:`Ready` once, when it is in its cgroup; then it answers each attempt of a batch with
an :class:`Outcome`, and the batch with :class:`Idle`. A batch whose limit it could not
lower (the kernel refused: it holds more than the new limit even after giving memory back)
is answered with :class:`Refused` and ``Idle(rss, "limit_change")``: nothing of it ran.

A worker's messages cross the pipe as :func:`encode` writes them and :func:`decode` reads
them back: a plain tuple of the kind's number and the fields in order. Pickling the
instances themselves costs a class lookup by name on each side (about 10-20 us a message
here, more than the rest of a no-op attempt's round trip); the tuple costs none. An outcome
whose result is :data:`TAIL_BYTES` or larger crosses as :func:`encode_parts` writes it: the
tuple with the result's length in its place, then the result itself, in the same frame
(``worker/frames.py``), so the result is neither copied into the pickle nor out of it.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

from oomguard.jobs.model import FailureClass
from oomguard.worker.calls import CallItem


@dataclass(frozen=True, slots=True)
class Batch:
    """Attempts a worker runs in order, under one memory limit."""

    items: list[CallItem]
    #: the limit the attempts run under (bytes; None: unlimited), for the worker's hygiene
    limit: int | None
    #: the worker lowers its own cgroup's limit to ``limit`` first (after giving memory
    #: back: the kernel will not lower a limit below what the cgroup holds)
    lower: bool = False
    #: the first attempt must measure a clean peak (worker/hygiene.py)
    clean: bool = False

    def __reduce__(self) -> tuple[type[Batch], tuple[object, ...]]:
        # Its fields in order: the default for a frozen dataclass with slots reads them
        # through dataclasses.fields on both sides, once a batch, on the hot path.
        return Batch, (self.items, self.limit, self.lower, self.clean)


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker is in its cgroup with its ``oom_score_adj`` set."""

    pid: int
    #: its resident memory with oomguard imported, after giving memory back
    baseline_rss: int


@dataclass(slots=True)
class Outcome:
    """How one attempt of a batch ended. Not frozen (never changed once made): one is
    made for each attempt on both sides of the pipe, and a frozen ``__init__`` of eight
    fields costs several times a plain one."""

    attempt_id: int
    ok: bool
    #: the pickled result (``ok``), else None
    payload: bytes | None
    failure_class: FailureClass | None
    message: str | None
    #: what was measured around the attempt (JSON: written to the store as it is)
    evidence: dict[str, object] = field(default_factory=dict)
    #: the attempt's peak memory (bytes), where it could be read
    peak_bytes: int | None = None
    #: the worker is to be recycled after its batch, for this reason (``memory_error``)
    recycle: str | None = None


@dataclass(frozen=True, slots=True)
class Idle:
    """The worker finished its batch (or refused it) and waits for the next."""

    rss_bytes: int
    #: it asks to be recycled, for this reason (``memory_error``, ``rss_growth``,
    #: ``max_tasks``, ``limit_change``); None: it can take another batch
    recycle: str | None


@dataclass(frozen=True, slots=True)
class Refused:
    """The worker could not lower its limit for a batch: none of it ran."""

    message: str
    #: the batch's attempts (filled in by the pool, which knows what it sent)
    attempt_ids: tuple[int, ...] = ()


#: what a worker sends the pool
Message = Ready | Outcome | Idle | Refused

#: the kinds of message, by their number on the wire
_KINDS: tuple[type[Message], ...] = (Ready, Outcome, Idle, Refused)
_NUMBER = {kind: number for number, kind in enumerate(_KINDS)}
_OUTCOME = _NUMBER[Outcome]
#: where an outcome's payload is in its tuple on the wire (after the kind's number)
_PAYLOAD = 1 + Outcome.__slots__.index("payload")

#: an outcome's payload at least this large follows its pickled tuple (:func:`encode_parts`)
TAIL_BYTES = 64 * 1024


def encode(message: Message) -> bytes:
    """``message`` as the bytes a worker sends (see :func:`decode`)."""
    kind = type(message)
    fields = tuple(getattr(message, name) for name in kind.__slots__)
    return pickle.dumps((_NUMBER[kind], *fields), protocol=pickle.HIGHEST_PROTOCOL)


def encode_parts(message: Message) -> tuple[bytes, ...]:
    """``message`` as the parts of one frame: :func:`encode`'s bytes, or for an outcome
    with a payload of :data:`TAIL_BYTES` or more, its tuple with the payload's length in
    the payload's place, then the payload itself (not copied: a result of 1 MiB crossed
    as a pickle inside a pickle was copied twice more, once on each side)."""
    payload = message.payload if isinstance(message, Outcome) else None
    if payload is None or len(payload) < TAIL_BYTES:
        return (encode(message),)
    fields = [_OUTCOME, *(getattr(message, name) for name in Outcome.__slots__)]
    fields[_PAYLOAD] = len(payload)
    return pickle.dumps(tuple(fields), protocol=pickle.HIGHEST_PROTOCOL), payload


def decode(data: bytes | bytearray) -> Message:
    """The message a worker sent as ``data`` (written by :func:`encode` or
    :func:`encode_parts`)."""
    number, *fields = pickle.loads(data)  # a pickle ends where a payload after it begins
    if number == _OUTCOME and isinstance(fields[_PAYLOAD - 1], int):
        size = fields[_PAYLOAD - 1]
        with memoryview(data) as view:
            fields[_PAYLOAD - 1] = view[len(data) - size :].tobytes()
    message: Message = _KINDS[number](*fields)
    return message


__all__ = [
    "TAIL_BYTES",
    "Batch",
    "Idle",
    "Message",
    "Outcome",
    "Ready",
    "Refused",
    "decode",
    "encode",
    "encode_parts",
]
