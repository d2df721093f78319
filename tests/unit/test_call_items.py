"""Call items (worker/calls.py): each form crosses a pipe or Dask as itself, a flag is set
on a copy, and the worker calls each as its form says (worker/child.py ``call``)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import FrozenInstanceError, replace

import pytest

from oomguard.worker.calls import (
    AggregateCall,
    CallItem,
    HeldRef,
    JsonCall,
    PickledCall,
    held_refs,
    input_bytes,
)
from oomguard.worker.child import call
from oomguard.worker.messages import Batch

JSON = JsonCall(1, "m:f", json.dumps({"x": 2}), replicate=3, hold=True)
PICKLED = PickledCall(2, "m:f", pickle.dumps(((1, 2), {"y": 3})), clean=True)
AGG = AggregateCall(3, "m:g", None, (pickle.dumps("one"), HeldRef(7)), at="tcp://w1")
ITEMS: list[CallItem] = [JSON, PICKLED, AGG]


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: type(i).__name__)
def test_an_item_pickles_back_as_itself(item: CallItem) -> None:
    back = pickle.loads(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(back) is type(item) and back == item


def test_a_batch_pickles_back_with_its_items() -> None:
    batch = Batch(list(ITEMS), 1 << 30, lower=True, clean=True)
    assert pickle.loads(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)) == batch


def test_a_flag_is_set_on_a_copy() -> None:
    item = JSON
    with pytest.raises(FrozenInstanceError):
        item.clean = True  # type: ignore[misc]
    clean = replace(item, clean=True)
    assert clean.clean and not item.clean and clean.attempt_id == item.attempt_id


def test_what_an_item_sends_and_refers_to() -> None:
    assert input_bytes(JSON) == len(json.dumps({"x": 2}))
    assert input_bytes(PICKLED) == len(PICKLED.payload)
    assert input_bytes(AGG) == len(pickle.dumps("one"))  # the held result is not sent
    assert held_refs(AGG) == [7] and held_refs(JSON) == []


def test_the_worker_calls_each_form_as_it_says() -> None:
    def seen(*args: object, **kwargs: object) -> object:
        return args, kwargs

    assert call(JSON, seen) == ((), {"x": 2, "replicate": 3})
    assert call(JsonCall(4, "m:f", None), seen) == ((), {})
    assert call(PICKLED, seen) == ((1, 2), {"y": 3})
    results = (pickle.dumps(1), pickle.dumps("two"))
    agg = AggregateCall(5, "m:g", json.dumps({"k": 1}), results)
    assert call(agg, seen) == (({"k": 1}, [1, "two"]), {})
    with pytest.raises(RuntimeError, match="attempt 7"):
        call(AGG, seen)  # a held result not put in by its worker


def test_the_worker_loads_a_function_once_and_keeps_no_command_or_failure() -> None:
    """A worker keeps the functions it loaded, by reference (_run_one's ``functions``):
    the same reference runs from it; a command's reference, one per command line, and a
    reference that failed to load are not kept."""
    from oomguard.jobs.command import Command
    from oomguard.jobs.model import FailureClass
    from oomguard.worker.child import _run_one

    functions: dict[str, Callable[..., object]] = {}
    ok, value, *_ = _run_one(JsonCall(1, "oomguard.examples:noop", '{"x": 5}'), None, functions)
    assert (ok, value) == (True, 5)
    assert list(functions) == ["oomguard.examples:noop"]
    functions["oomguard.examples:noop"] = lambda x: x + 1  # what is kept is what runs
    assert _run_one(JsonCall(2, "oomguard.examples:noop", '{"x": 5}'), None, functions)[1] == 6
    ok, _, fc, message, _ = _run_one(JsonCall(3, "no_such_module_xyz:f", None), None, functions)
    assert not ok and fc is FailureClass.ERROR and "no_such_module_xyz" in (message or "")
    ref = Command(("true",), False).reference
    assert _run_one(JsonCall(4, ref, None), None, functions)[0] is True
    assert list(functions) == ["oomguard.examples:noop"]
