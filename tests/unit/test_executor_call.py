"""executor/call.py: a call by value, encoded the fast way where it can be (plain
arguments, a function already sent) and by cloudpickle where it must (code among the
arguments, closures), and run as the worker runs it."""

from __future__ import annotations

import pickle
from collections.abc import Callable

from oomguard.executor import call
from oomguard.executor.call import (
    ChunkAnswer,
    Raised,
    Returned,
    decode,
    encode_call,
    encode_chunk,
    run_call,
    run_chunk,
)


def twice(x: int) -> int:
    return 2 * x


def apply(fn: Callable[[int], int], x: int) -> int:
    return fn(x)


def test_plain_call_runs_and_its_function_is_pickled_once() -> None:
    call._sent.clear()
    first = encode_call(twice, (3,), {})
    assert len(call._sent) == 1
    assert encode_call(twice, (3,), {}) == first  # the same call, the same bytes (digest)
    answer = decode(run_call(first))
    assert answer == Returned(6)


def test_code_among_the_arguments_travels_by_value() -> None:
    blob = encode_call(apply, (lambda x: x + 1, 41), {})
    assert decode(run_call(blob)) == Returned(42)


def test_a_closure_is_pickled_at_each_call_with_its_values_then() -> None:
    call._sent.clear()
    k = 1

    def add(x: int) -> int:
        return x + k

    before = encode_call(add, (1,), {})
    k = 10
    after = encode_call(add, (1,), {})
    assert call._sent == {}
    assert decode(run_call(before)) == Returned(2)
    assert decode(run_call(after)) == Returned(11)


def test_chunk_with_plain_and_with_code_arguments() -> None:
    assert decode(run_chunk(encode_chunk(twice, [(1,), (2,)]))) == ChunkAnswer([2, 4])
    chunk = encode_chunk(apply, [(abs, -3), (lambda x: x * x, 3)])
    assert decode(run_chunk(chunk)) == ChunkAnswer([3, 9])


def test_a_chunk_of_values_calls_with_each_value_alone() -> None:
    """A map over one iterable sends its values, not a tuple per call: a tuple among
    them is one argument, as ``map(fn, [(1, 2)])`` calls ``fn((1, 2))``."""
    assert decode(run_chunk(encode_chunk(twice, [1, 2], star=False))) == ChunkAnswer([2, 4])
    answer = decode(run_chunk(encode_chunk(len, [(1, 2), "abc", 7], star=False)))
    assert isinstance(answer, ChunkAnswer)
    assert answer.values == [2, 3]
    assert answer.raised is not None and "TypeError" in answer.raised.text
    made = decode(run_chunk(encode_chunk(lambda f: f(5), [abs, lambda x: -x], star=False)))
    assert made == ChunkAnswer([5, -5])


def test_a_chunk_stored_before_chunks_of_values_still_runs() -> None:
    """A chunk as stored by the version before (init, function, arguments a call)."""
    blob = pickle.dumps((None, call._fn_blob(twice), [(1,), (3,)]))
    assert decode(run_chunk(blob)) == ChunkAnswer([2, 6])


def test_a_chunk_ends_at_its_first_call_that_raises() -> None:
    answer = decode(run_chunk(encode_chunk(apply, [(abs, -1), (int, "x"), (abs, -3)])))
    assert isinstance(answer, ChunkAnswer)
    assert answer.values == [1]
    assert isinstance(answer.raised, Raised)
    assert answer.raised.exception is not None
    err = decode(answer.raised.exception)
    assert isinstance(err, ValueError)
    assert "invalid literal" in answer.raised.traceback


def test_plain_answers_by_the_standard_pickler_others_by_cloudpickle() -> None:
    """Plain values (numbers, strings, bytes, None) are pickled by the standard pickler;
    anything else, a lambda included, by cloudpickle, and it comes back."""
    assert b"cloudpickle" not in run_chunk(encode_chunk(twice, [(1,), (2,)]))
    assert b"cloudpickle" not in run_call(encode_call(twice, (3,), {}))
    # A plain value returned travels as a one-item tuple; an answer stored by the
    # version before (a pickled Returned) decodes the same.
    assert pickle.loads(run_call(encode_call(twice, (3,), {}))) == (6,)
    assert decode(pickle.dumps(Returned(6))) == Returned(6)
    assert decode(run_call(encode_call(lambda: (1, 2), (), {}))) == Returned((1, 2))
    assert b"cloudpickle" in run_chunk(encode_chunk(apply, [(lambda x: lambda: x, 7)]))
    answer = decode(run_chunk(encode_chunk(apply, [(lambda x: lambda: x, 7)])))
    assert isinstance(answer, ChunkAnswer)
    (made,) = answer.values
    assert callable(made)
    assert made() == 7
    single = decode(run_call(encode_call(apply, (lambda x: lambda: x * 2, 4), {})))  # by value
    assert isinstance(single, Returned)
    assert callable(single.value)
    assert single.value() == 8
