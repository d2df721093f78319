"""A call by value: the user's function and arguments, cloudpickled, and what a worker
sends back for it.

A worker runs every Executor call through :func:`run_call` (the reserved task reference
:data:`CALL_REF`): the whole call travels as one cloudpickled blob in the task's pickled
payload, so lambdas, closures and functions of ``__main__`` run as importable ones do, and
the worker needs nothing of its own for them. The answer is cloudpickled too (a result of
any picklable type, a lambda included), and an exception comes back as a value, with its
type, its attributes and the remote traceback (:class:`Raised`).
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cloudpickle

#: the task reference every Executor call runs as (the worker loads it as any task)
CALL_REF = "oomguard.executor.call:run_call"
#: the task reference of a map chunk: many calls of one function, one task
CHUNK_REF = "oomguard.executor.call:run_chunk"


@dataclass(frozen=True)
class Returned:
    """A call that returned ``value``."""

    value: object


@dataclass(frozen=True)
class Raised:
    """A call that raised: the exception cloudpickled (None when it could not be), its
    ``repr`` and the remote traceback's text."""

    exception: bytes | None
    text: str
    traceback: str


Answer = Returned | Raised


#: an executor's ``initializer`` and ``initargs``
Initializer = tuple[Callable[..., object], tuple[object, ...]]

#: digests of the initializers this worker process ran (process-local, in the worker)
_initialized: set[str] = set()


def encode_call(
    fn: Callable[..., object],
    args: Sequence[object],
    kwargs: dict[str, object],
    init: Initializer | None = None,
) -> bytes:
    """One call, by value (with the initializer its worker runs first, once)."""
    return bytes(cloudpickle.dumps((_init_blob(init), fn, tuple(args), kwargs)))


def encode_chunk(
    fn: Callable[..., object],
    calls: Sequence[tuple[object, ...]],
    init: Initializer | None = None,
) -> bytes:
    """Calls of one function (a map chunk), by value."""
    return bytes(cloudpickle.dumps((_init_blob(init), fn, list(calls))))


def _init_blob(init: Initializer | None) -> bytes | None:
    return None if init is None else bytes(cloudpickle.dumps(init))


def _initialize(blob: bytes | None) -> None:
    if blob is None:
        return
    digest = hashlib.sha256(blob).hexdigest()
    if digest not in _initialized:
        fn, args = cloudpickle.loads(blob)
        fn(*args)
        _initialized.add(digest)


def call_digest(blob: bytes, order: int) -> str:
    """How a call is recognised again in a durable store: the digest of its cloudpickled
    function and arguments, and its place among the script's calls."""
    return hashlib.sha256(blob + order.to_bytes(8, "little")).hexdigest()


def _answer(fn: Callable[..., object], args: Sequence[object], kwargs: dict[str, object]) -> Answer:
    try:
        return Returned(fn(*args, **kwargs))
    except MemoryError:
        raise  # the worker's to see: retried with more memory, as any task's
    except Exception as err:
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        try:
            blob: bytes | None = bytes(cloudpickle.dumps(err))
        except Exception:
            blob = None
        return Raised(blob, repr(err), tb)


def _packed(answer: object) -> bytes:
    try:
        return bytes(cloudpickle.dumps(answer))
    except Exception as err:  # a result that cannot be pickled: the caller's error
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        return bytes(cloudpickle.dumps(Raised(None, f"the result cannot be pickled: {err!r}", tb)))


def run_call(blob: bytes) -> bytes:
    """Run one call (in a worker): its :class:`Answer`, cloudpickled."""
    init, fn, args, kwargs = cloudpickle.loads(blob)
    _initialize(init)
    return _packed(_answer(fn, args, kwargs))


def run_chunk(blob: bytes) -> bytes:
    """Run a map chunk (in a worker): the list of its calls' answers, cloudpickled; a
    call that raised ends the chunk (as ``ProcessPoolExecutor.map`` does)."""
    init, fn, calls = cloudpickle.loads(blob)
    _initialize(init)
    answers: list[Answer] = []
    for args in calls:
        answer = _answer(fn, args, {})
        answers.append(answer)
        if isinstance(answer, Raised):
            break
    return _packed(answers)


def decode(blob: bytes) -> object:
    """What :func:`run_call` or :func:`run_chunk` sent back."""
    return cloudpickle.loads(blob)


def qualified_name(fn: Callable[..., object]) -> str:
    """The default memory key of ``fn``'s calls: its module and qualified name."""
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"
