"""Reading a submission's body: values counted outside strings, errors bounded."""

from __future__ import annotations

import json

import pytest
from fastapi.exceptions import RequestValidationError

from oomguard.api.intake import MAX_ERRORS, count_values, read_submission, shown_errors
from oomguard.errors import BackpressureError

NOOP = "oomguard.examples:noop"


def test_count_values_skips_strings() -> None:
    assert count_values(b"[1,2,3]") == 4
    assert count_values(b'{"a": "x,y,[z]{"}') == 2
    assert count_values(b'["\\"[,", 1]') == 3  # an escaped quote does not end the string
    assert count_values(b'"unterminated [,,,') == 1  # not JSON: the parser says so
    assert count_values(b"") == 1


def test_too_many_values_refused_unparsed() -> None:
    body = ("[" + ",".join(["{}"] * 1000) + "]").encode()
    with pytest.raises(BackpressureError) as info:
        read_submission(body, max_values=100, max_tasks=None)
    assert info.value.data["code"] == "payload_too_large"
    # commas inside a string do not count
    text = json.dumps({"task": NOOP, "args": {"x": "," * 1000}}).encode()
    assert read_submission(text, max_values=100, max_tasks=None).args["x"] == "," * 1000


def test_tasks_over_the_limit_refused_for_good() -> None:
    body = json.dumps({"task": NOOP, "tasks": [{}] * 11}).encode()
    with pytest.raises(BackpressureError) as info:
        read_submission(body, max_values=10_000, max_tasks=10)
    assert info.value.data["code"] == "batch_too_large"


@pytest.mark.parametrize(
    "body",
    [
        b'{"task": "x", "args": {"s": "\\ud800"}}',  # a lone surrogate
        b"[" * 300 + b"]" * 300,  # nested deeper than 200
        b"{not json",
    ],
)
def test_malformed(body: bytes) -> None:
    with pytest.raises(RequestValidationError) as info:
        read_submission(body, max_values=10_000, max_tasks=None)
    assert info.value.errors()[0]["type"] == "json_invalid"


def test_errors_are_few_and_short() -> None:
    body = json.dumps({"task": NOOP, "tasks": [1] * 5000, "x" * 5000: 1}).encode()
    with pytest.raises(RequestValidationError) as info:
        read_submission(body, max_values=100_000, max_tasks=None)
    errors = info.value.errors()
    assert len(errors) == MAX_ERRORS + 1  # one more than shown: "more not shown"
    shown = shown_errors(errors)
    assert len(shown) == MAX_ERRORS
    assert len(json.dumps(shown)) < 4096
