"""A call by value: the user's function and arguments, cloudpickled, and what a worker
sends back for it.

A worker runs every Executor call through :func:`run_call` (the reserved task reference
:data:`CALL_REF`): the whole call travels as one cloudpickled blob in the task's pickled
payload, so lambdas, closures and functions of ``__main__`` run as importable ones do, and
the worker needs nothing of its own for them. The answer is pickled by the standard pickler
when its values are plain (numbers, strings, bytes, None) and cloudpickled otherwise (a
result of any picklable type, a lambda included), and an exception comes back as a value,
with its type, its attributes and the remote traceback (:class:`Raised`). A map chunk
(:data:`CHUNK_REF`) answers with its values in one list (:class:`ChunkAnswer`), not an
answer per call; a chunk of a map over one iterable travels as that iterable's values, not
a tuple of arguments per call (pickling 256 one-item tuples cost six times as much as 256
values, on the caller's thread).
"""

from __future__ import annotations

import hashlib
import itertools
import pickle
import traceback
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import cloudpickle

#: the task reference every Executor call runs as (the worker loads it as any task)
CALL_REF = "oomguard.executor.call:run_call"
#: the task reference of a map chunk: many calls of one function, one task
CHUNK_REF = "oomguard.executor.call:run_chunk"


@dataclass(frozen=True)
class Returned:
    """A call that returned ``value``."""

    value: object

    def __reduce__(self) -> tuple[type[Returned], tuple[object]]:
        # A dataclass's default reduction (copyreg, its __dict__ as state) costs about
        # three times as much, once per call on both sides.
        return Returned, (self.value,)


@dataclass(frozen=True)
class Raised:
    """A call that raised: the exception cloudpickled (None when it could not be), its
    ``repr`` and the remote traceback's text."""

    exception: bytes | None
    text: str
    traceback: str

    def __reduce__(self) -> tuple[type[Raised], tuple[bytes | None, str, str]]:
        return Raised, (self.exception, self.text, self.traceback)


Answer = Returned | Raised


@dataclass(frozen=True)
class ChunkAnswer:
    """What a map chunk's calls returned, in order, and the call that raised (the last
    one run: a call that raises ends its chunk), if one did."""

    values: list[object]
    raised: Raised | None = None

    def __reduce__(self) -> tuple[type[ChunkAnswer], tuple[list[object], Raised | None]]:
        return ChunkAnswer, (self.values, self.raised)


#: the initializers this worker process ran, as pickled (process-local, in the worker)
_initialized: set[bytes] = set()


#: the types of arguments the standard pickle writes as cloudpickle would (no code, no
#: class of ``__main__``): calls with only these skip cloudpickle's slower pickler
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})
#: plain functions (no closure) already pickled, by identity (each kept, so its id stays
#: its own): a function sent again is not pickled again. Like ProcessPoolExecutor's
#: workers, which see a script's globals as they were when they started, a function's
#: globals travel as they were when the executor first sent it.
_sent: dict[int, tuple[Callable[..., object], bytes]] = {}
#: most functions kept in :data:`_sent` (and in a worker's :data:`_loaded`)
SENT_MAX = 256
#: the functions a worker process unpickled, by their pickle
_loaded: dict[bytes, Callable[..., object]] = {}


def _fn_blob(fn: Callable[..., object]) -> bytes:
    hit = _sent.get(id(fn))
    if hit is not None and hit[0] is fn:
        return hit[1]
    blob = bytes(cloudpickle.dumps(fn))
    if isinstance(fn, types.FunctionType) and fn.__closure__ is None:
        if len(_sent) >= SENT_MAX:
            _sent.clear()
        _sent[id(fn)] = (fn, blob)
    return blob


def _fn(blob: bytes) -> Callable[..., object]:
    fn = _loaded.get(blob)
    if fn is None:
        fn = cloudpickle.loads(blob)
        assert callable(fn)
        if len(_loaded) >= SENT_MAX:
            _loaded.clear()
        _loaded[blob] = fn
    return fn


def _plain(values: Iterable[object]) -> bool:
    return _PLAIN.issuperset(map(type, values))


def _dumps(value: object, plain: bool) -> bytes:
    if plain:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return bytes(cloudpickle.dumps(value))


def encode_call(
    fn: Callable[..., object],
    args: Sequence[object],
    kwargs: dict[str, object],
    init: bytes | None = None,
) -> bytes:
    """One call, by value (with the initializer its worker runs first, once:
    :func:`pickled_initializer`)."""
    plain = _plain(args) and _plain(kwargs.values())
    return _dumps((init, _fn_blob(fn), tuple(args), kwargs), plain)


def encode_chunk(
    fn: Callable[..., object],
    calls: Sequence[object],
    init: bytes | None = None,
    star: bool = True,
) -> bytes:
    """Calls of one function (a map chunk), by value: with ``star`` each call's arguments
    (a tuple), else each call's one argument (a map over one iterable: ``fn(value)``)."""
    if star:
        plain = _plain(itertools.chain.from_iterable(cast("Iterable[Iterable[object]]", calls)))
    else:
        plain = _plain(calls)
    return _dumps((init, _fn_blob(fn), list(calls), star), plain)


def pickled_initializer(fn: Callable[..., object], args: tuple[object, ...]) -> bytes:
    """An executor's ``initializer`` and ``initargs``, pickled once, when the executor is
    made (as ``ProcessPoolExecutor`` does), not at every call."""
    return bytes(cloudpickle.dumps((fn, args)))


def _initialize(blob: bytes | None) -> None:
    if blob is None:
        return
    if blob not in _initialized:
        fn, args = cloudpickle.loads(blob)
        fn(*args)
        _initialized.add(blob)


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
        return _raised(err)


def _raised(err: Exception) -> Raised:
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        blob: bytes | None = bytes(cloudpickle.dumps(err))
    except Exception:
        blob = None
    return Raised(blob, repr(err), tb)


def _packed(answer: object, plain: bool = False) -> bytes:
    """``answer`` pickled: by the standard pickler when its values are ``plain`` (C, several
    times as fast on a chunk's many values), else by cloudpickle, which writes by value
    what this worker cannot name (a lambda, a class cloudpickle made here from the caller's
    ``__main__``) where the standard pickler would import modules to look for it."""
    try:
        if plain:
            return pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        return bytes(cloudpickle.dumps(answer))
    except Exception as err:  # a result that cannot be pickled: the caller's error
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        return bytes(cloudpickle.dumps(Raised(None, f"the result cannot be pickled: {err!r}", tb)))


def run_call(blob: bytes) -> bytes:
    """Run one call (in a worker): its :class:`Answer`, pickled; a plain value returned
    as a one-item tuple (:func:`decode` makes it a :class:`Returned`): pickling the class
    by name cost 2 us of the worker's time a call, and loading it 1.5 us of the caller's."""
    init, fn, args, kwargs = cloudpickle.loads(blob)
    _initialize(init)
    answer = _answer(_fn(fn), args, kwargs)
    if isinstance(answer, Returned) and type(answer.value) in _PLAIN:
        return pickle.dumps((answer.value,), protocol=pickle.HIGHEST_PROTOCOL)
    return _packed(answer)


def run_chunk(blob: bytes) -> bytes:
    """Run a map chunk (in a worker): its :class:`ChunkAnswer`, pickled; a call that
    raised ends the chunk (as ``ProcessPoolExecutor.map`` does)."""
    init, fn_blob, calls, *rest = cloudpickle.loads(blob)
    # (init, fn, calls): a chunk stored before chunks of values, each call's arguments
    star = rest[0] if rest else True
    fn = _fn(fn_blob)
    _initialize(init)
    values: list[object] = []
    append = values.append
    try:
        if star:
            for args in calls:
                append(fn(*args))
        else:
            for value in calls:
                append(fn(value))
    except MemoryError:
        raise  # the worker's to see: the chunk is retried with more memory
    except Exception as err:
        return _packed(ChunkAnswer(values, _raised(err)), _plain(values))
    return _packed(ChunkAnswer(values), _plain(values))


def decode(blob: bytes) -> object:
    """What :func:`run_call` or :func:`run_chunk` sent back (a one-item tuple: a plain
    value returned)."""
    answer = cloudpickle.loads(blob)
    if type(answer) is tuple:
        return Returned(answer[0])
    return answer


def qualified_name(fn: Callable[..., object]) -> str:
    """The default memory key of ``fn``'s calls: its module and qualified name."""
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"
