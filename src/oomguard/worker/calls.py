"""Call items: what a worker needs to run one attempt, as a small union of frozen types.

The scheduler builds one per attempt (:func:`oomguard.scheduler.items.call_item`), the
executors hand them on without reading the store, and the worker runs them
(:func:`oomguard.worker.child.call`): a local worker gets them in a
:class:`~oomguard.worker.messages.Batch` over its pipe, a Dask worker as the arguments of its
Dask task. Each form names how the task is called:

- :class:`JsonCall`: ``fn(**params)`` with JSON arguments (and ``replicate=``, if any);
- :class:`PickledCall`: ``fn(*args, **kwargs)`` from a pickled ``(args, kwargs)``;
- :class:`AggregateCall`: ``fn(params, results)`` over the pickled results of a group's
  replicates, where a result the Dask executor holds on a worker is a :class:`HeldRef`
  until that worker puts the bytes in (``executors/dask/remote/held.py``).

Every form carries ``attempt_id``, ``fn`` and the executor's flags: ``hold`` (keep the
result where it was made, for an aggregation: Dask), ``at`` (the Dask worker holding results
an aggregation refers to) and ``clean`` (the attempt must measure a clean peak:
``worker/hygiene.py``). A flag is set on a copy (:func:`dataclasses.replace`), never on the
item.

On the wire, each item pickles as its class and its fields in order (:class:`_Wire`): the
default for a frozen dataclass with slots calls ``dataclasses.fields`` on both sides, about
three times as slow, and a batch of no-op attempts is mostly this.

To add a form: a frozen dataclass with slots deriving from :class:`_Wire`, with
``attempt_id`` and ``fn`` first and ``hold``, ``at``, ``clean`` last (with their defaults),
added to :data:`CallItem` and to :data:`_FIELDS`; then :func:`~oomguard.worker.child.call`
calls it, and :mod:`mypy` points at every other place that reads the union exhaustively.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import TypeAlias


class _Wire:
    """Pickled as ``(class, fields in order)``: one C call to read them, one to rebuild."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type[_Wire], tuple[object, ...]]:
        cls = type(self)
        fields: tuple[object, ...] = _FIELDS[cls](self)
        return cls, fields


@dataclass(frozen=True, slots=True)
class HeldRef:
    """In an aggregation's results: the result of attempt ``attempt_id``, held on the Dask
    worker that made it (not sent)."""

    attempt_id: int


@dataclass(frozen=True, slots=True)
class JsonCall(_Wire):
    """``fn(**params)``: a task with JSON arguments (a replicate also gets ``replicate=``)."""

    attempt_id: int
    fn: str
    #: the arguments as a JSON object (None: none)
    params: str | None
    replicate: int | None = None
    hold: bool = False
    at: str | None = None
    clean: bool = False


@dataclass(frozen=True, slots=True)
class PickledCall(_Wire):
    """``fn(*args, **kwargs)``: a task whose arguments were pickled when it was submitted."""

    attempt_id: int
    fn: str
    #: ``pickle.dumps((args, kwargs))``
    payload: bytes
    hold: bool = False
    at: str | None = None
    clean: bool = False


@dataclass(frozen=True, slots=True)
class AggregateCall(_Wire):
    """``fn(params, results)``: an aggregation over its group's replicates' results."""

    attempt_id: int
    fn: str
    #: the group's arguments as a JSON object (None: none)
    params: str | None
    #: each replicate's pickled result, or where it is held
    results: tuple[bytes | HeldRef, ...]
    hold: bool = False
    at: str | None = None
    clean: bool = False


#: one attempt's call, in any of its forms
CallItem: TypeAlias = JsonCall | PickledCall | AggregateCall

#: each form's fields in the order its ``__init__`` takes them (what :class:`_Wire` sends)
_FIELDS: dict[type[_Wire], Callable[[_Wire], tuple[object, ...]]] = {
    cls: attrgetter(*cls.__match_args__) for cls in (JsonCall, PickledCall, AggregateCall)
}


def input_bytes(item: CallItem) -> int:
    """The rough size of what ``item`` sends to the worker (a held result is not sent)."""
    if isinstance(item, PickledCall):
        return len(item.payload)
    size = len(item.params or "")
    if isinstance(item, AggregateCall):
        size += sum(len(r) for r in item.results if not isinstance(r, HeldRef))
    return size


def held_refs(item: CallItem) -> list[int]:
    """The attempts whose results ``item`` refers to as held on a worker."""
    if not isinstance(item, AggregateCall):
        return []
    return [r.attempt_id for r in item.results if isinstance(r, HeldRef)]


__all__ = [
    "AggregateCall",
    "CallItem",
    "HeldRef",
    "JsonCall",
    "PickledCall",
    "held_refs",
    "input_bytes",
]
