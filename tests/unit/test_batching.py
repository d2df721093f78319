"""Which attempts ride in one batch: pure logic."""

from __future__ import annotations

from collections import deque

from oomguard.scheduler.batching import (
    BATCH_BYTES,
    BATCH_MAX,
    BATCH_UNKNOWN,
    batch_cap,
    followers,
)
from oomguard.store.sqlite import TaskRow


def _task(
    i: int,
    *,
    params: str = "{}",
    fn: str = "m:f",
    kind: str = "task",
    timeout: float | None = None,
    ref: str | None = None,
) -> TaskRow:
    return TaskRow(
        i, "j", i, kind, None, fn, params, ref, None, None, 0, 0, 0, 3, timeout, None, None, None
    )


def _key(task: TaskRow) -> str:
    return task.fn


def test_only_keys_seen_to_be_short_are_batched() -> None:
    assert batch_cap(None) == BATCH_UNKNOWN == 1
    assert batch_cap(0.5) == 1 and batch_cap(2.5) == 1
    assert batch_cap(0.001) == 50
    assert batch_cap(1e-9) == BATCH_MAX


def test_followers_stop_at_another_key_a_timeout_or_the_count() -> None:
    window = deque([_task(2), _task(3), _task(4, fn="m:g"), _task(5)])
    assert [t.id for t in followers(window, _task(1), "m:f", 10, _key)] == [2, 3]
    assert [t.id for t in window] == [4, 5]
    window = deque([_task(2), _task(3, timeout=5.0)])
    assert [t.id for t in followers(window, _task(1), "m:f", 10, _key)] == [2]
    window = deque(_task(i) for i in range(2, 20))
    assert len(followers(window, _task(1), "m:f", 4, _key)) == 3  # 4 in all with the first


def test_a_batch_is_bounded_by_its_input_bytes() -> None:
    big = "x" * (BATCH_BYTES // 3 + 1)
    window = deque(_task(i, params=big) for i in range(2, 10))
    taken = followers(window, _task(1, params=big), "m:f", 100, _key)
    assert len(taken) == 1  # two of them fit in a batch, three would not
    assert sum(len(t.params or "") for t in taken) + len(big) <= BATCH_BYTES
    # A task whose input is a blob file (its size unknown here) rides alone.
    window = deque([_task(2, ref="blob")])
    assert followers(window, _task(1), "m:f", 100, _key) == []
