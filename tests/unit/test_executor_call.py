"""executor/call.py: a call by value, encoded the fast way where it can be (plain
arguments, a function already sent) and by cloudpickle where it must (code among the
arguments, closures), and run as the worker runs it."""

from __future__ import annotations

from collections.abc import Callable

from oomguard.executor import call
from oomguard.executor.call import Returned, decode, encode_call, encode_chunk, run_call, run_chunk


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
    assert decode(run_chunk(encode_chunk(twice, [(1,), (2,)]))) == [Returned(2), Returned(4)]
    chunk = encode_chunk(apply, [(abs, -3), (lambda x: x * x, 3)])
    assert decode(run_chunk(chunk)) == [Returned(3), Returned(9)]
