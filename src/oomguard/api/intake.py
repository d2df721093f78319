"""Reading a submission's body: refused early and cheaply, parsed once, errors bounded.

A body is at most ``max_request_bytes`` (the guard cuts it off), but a few megabytes of
JSON can still cost hundreds of megabytes as Python objects (``{}`` is 3 bytes of text and
about 70 bytes of dict) and millions of validation errors. So, in this order:

1. :func:`count_values` counts the JSON values of the raw bytes (commas and brackets,
   outside strings) and a body holding more than ``max_values`` is refused (413) before
   anything is built from it;
2. it is parsed once (``pydantic_core.from_json``: lone surrogates and nesting deeper than
   200 levels are malformed JSON, 400);
3. a ``tasks`` list longer than the server's ``--max-pending-tasks`` is refused (413
   ``batch_too_large``); unknown fields and ``tasks`` items that are not objects are found
   with at most
   :data:`MAX_ERRORS` errors before the model is validated, so validation itself never
   makes more than a few errors;
4. the model is validated (422 with at most :data:`MAX_ERRORS` errors).

It runs on a worker thread, never on the event loop (``/healthz`` keeps answering).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence

import pydantic_core
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from oomguard.api.schemas import PATTERN_WORDS, SubmitRequest
from oomguard.errors import BackpressureError

#: validation errors a refusal carries (the rest are counted, not listed)
MAX_ERRORS = 10
#: a JSON string, closed or running to the end of the body (so no input makes the search
#: start over at every quote: linear time)
_STRING = re.compile(rb'"[^"\\]*(?:\\(?:.|\Z)[^"\\]*)*(?:"|\Z)', re.DOTALL)


def _structure(text: bytes) -> int:
    return text.count(b",") + text.count(b"[") + text.count(b"{") + 1


def count_values(body: bytes) -> int:
    """About how many JSON values ``body`` holds: its commas and brackets outside strings,
    plus one (an upper bound for any valid JSON but ``{"k": v}`` forms; cheap: the strings
    are only skipped when the quick count, which includes them, is large)."""
    quick = _structure(body)
    if quick <= 1 or b'"' not in body:
        return quick
    return _structure(_STRING.sub(b'""', body))


def read_submission(body: bytes, max_values: int, max_tasks: int | None) -> SubmitRequest:
    """The :class:`SubmitRequest` in ``body``; raises 413 (``payload_too_large``, or
    ``batch_too_large`` for a ``tasks`` list longer than ``max_tasks``), 400 (malformed
    JSON) or 422 (at most :data:`MAX_ERRORS` errors) as described above."""
    if _structure(body) > max_values:
        values = count_values(body)
        if values > max_values:
            raise BackpressureError(
                f"the request body holds about {values} JSON values, more than the "
                f"{max_values} a submission may hold: split it",
                code="payload_too_large",
                retry_after=None,
            )
    try:
        data = pydantic_core.from_json(body)
    except ValueError as err:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {err}"}]
        ) from None
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if max_tasks is not None and isinstance(tasks, list) and len(tasks) > max_tasks:
        raise too_many_tasks(len(tasks), "--max-pending-tasks", max_tasks)
    errors = list(itertools.islice(_shape_errors(data), MAX_ERRORS + 1))
    if errors:
        raise RequestValidationError(errors)
    try:
        return SubmitRequest.model_validate(data)
    except ValidationError as err:
        found = err.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError(
            [dict(e, loc=("body", *e["loc"])) for e in found[: MAX_ERRORS + 1]]
        ) from None


def too_many_tasks(total: int, what: str, limit: int) -> BackpressureError:
    """413 ``batch_too_large``: more tasks than the server may ever hold pending (or the
    namespace's quota allows); retrying later would not help."""
    return BackpressureError(
        f"{total} tasks in one submission: more than {what} ({limit}) allows pending at "
        "once: split the batch",
        code="batch_too_large",
        retry_after=None,
        limit=limit,
    )


def _shape_errors(data: object) -> Iterable[dict[str, object]]:
    """Errors the model would give once per item (unknown fields, ``tasks`` items that are
    not objects), lazily: the caller takes the first few."""
    if not isinstance(data, dict):
        return
    fields = SubmitRequest.model_fields
    for key in data:
        if key not in fields:
            yield {
                "type": "extra_forbidden",
                "loc": ("body", key),
                "msg": "Extra inputs are not permitted",
            }
    tasks = data.get("tasks")
    if isinstance(tasks, list):
        for i, item in enumerate(tasks):
            if not isinstance(item, dict):
                yield {
                    "type": "dict_type",
                    "loc": ("body", "tasks", i),
                    "msg": "Input should be a valid dictionary",
                }


def shown_errors(errors: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """At most :data:`MAX_ERRORS` errors as answered: ``loc``, ``msg``, ``type``, each
    part cut to a size (a field name may be as long as the body)."""
    return [
        {
            "loc": [p if isinstance(p, int) else str(p)[:100] for p in _loc(e)][:20],
            "msg": in_words(e)[:300],
            "type": str(e.get("type", ""))[:60],
        }
        for e in errors[:MAX_ERRORS]
    ]


def _loc(error: Mapping[str, object]) -> Sequence[object]:
    """Where an error is: the path of keys and indexes (pydantic's ``loc``)."""
    loc = error.get("loc", ())
    return loc if isinstance(loc, list | tuple) else ()


def in_words(error: Mapping[str, object]) -> str:
    """An error's message for a person: a value that missed a field's pattern is told
    what the field takes (:data:`~oomguard.api.schemas.PATTERN_WORDS`), not the regex."""
    msg = str(error.get("msg", ""))
    if error.get("type") != "string_pattern_mismatch":
        return msg
    loc = [p for p in _loc(error) if isinstance(p, str)]
    words = PATTERN_WORDS.get(loc[-1]) if loc else None
    return words if words is not None else "is not of the form this field takes"


__all__ = [
    "MAX_ERRORS",
    "count_values",
    "in_words",
    "read_submission",
    "shown_errors",
    "too_many_tasks",
]
