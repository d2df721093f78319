"""Task listings: arguments only where listable, errors cut, rows cut at a byte budget."""

from __future__ import annotations

import json

from oomguard.api.listing import ERROR_MAX, task_list
from oomguard.store.records import TaskListing


def row(
    task_id: int, params: str | None = None, *, in_blob: bool = False, error: str | None = None
) -> TaskListing:
    return TaskListing(
        task_id=task_id,
        group=task_id,
        kind="task",
        replicate=None,
        fn="m:f",
        state="succeeded",
        attempts=1,
        failure_class=None,
        error=error,
        params=params,
        params_in_blob=in_blob,
    )


def test_unlistable_arguments_are_marked_not_a_500() -> None:
    rows = [
        row(1, '{"x": 1}'),
        row(2, '{"s": "\\ud800"}'),  # a lone surrogate: no JSON answer can carry it
        row(3, "[" * 300 + "]" * 300),  # nested deeper than an answer can carry
        row(4, None, in_blob=True),  # too large: kept in a blob file, never read
        row(5, None),  # not asked for
    ]
    listed = task_list("j", rows, budget=1 << 20)
    assert [t.params for t in listed.tasks] == [{"x": 1}, None, None, None, None]
    assert [t.params_truncated for t in listed.tasks] == [False, True, True, True, False]
    json.dumps(listed.model_dump())  # encodable


def test_errors_cut_and_rows_cut_at_the_budget() -> None:
    rows = [row(i, json.dumps({"x": "a" * 1000}), error="e" * 10_000) for i in range(1, 101)]
    listed = task_list("j", rows, budget=20_000)
    assert listed.truncated and 1 <= len(listed.tasks) < 100
    assert listed.next_after == listed.tasks[-1].task_id
    assert all(len(t.error or "") < ERROR_MAX + 100 for t in listed.tasks)
    assert len(listed.model_dump_json()) < 25_000
    one = task_list("j", rows[:1], budget=10)  # one row at least
    assert len(one.tasks) == 1 and not one.truncated
