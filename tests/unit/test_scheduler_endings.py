"""scheduler/endings.py: a watched job's ended tasks are told after their commit, in one
batch per commit, and never a task whose own writes could not be stored."""

from __future__ import annotations

from collections.abc import Sequence

from oomguard.scheduler.endings import Endings, TaskEnded


def test_held_until_released_and_only_for_watched_jobs() -> None:
    endings = Endings()
    told: list[Sequence[TaskEnded]] = []
    endings.watch("a", told.append)
    endings.hold(TaskEnded("a", 1, 0, b"x"))
    endings.hold(TaskEnded("b", 2, 0, b"y"))  # nobody watches b: not even held
    endings.hold(TaskEnded("a", 3, 1, None, "crashed"))
    assert told == []  # not committed yet
    endings.release()
    assert told == [[TaskEnded("a", 1, 0, b"x"), TaskEnded("a", 3, 1, None, "crashed")]]
    endings.release()
    assert len(told) == 1


def test_unrecorded_tasks_are_not_told_and_unwatch_stops() -> None:
    endings = Endings()
    told: list[Sequence[TaskEnded]] = []
    endings.watch("a", told.append)
    endings.hold(TaskEnded("a", 1, 0, b"x"))
    endings.hold(TaskEnded("a", 2, 1, b"y"))
    endings.release(unrecorded={1})
    assert told == [[TaskEnded("a", 2, 1, b"y")]]
    endings.unwatch("a")
    endings.hold(TaskEnded("a", 3, 2, b"z"))
    endings.release()
    assert len(told) == 1


def test_a_failing_watcher_does_not_stop_the_others() -> None:
    endings = Endings()
    told: list[Sequence[TaskEnded]] = []

    def broken(batch: Sequence[TaskEnded]) -> None:
        raise RuntimeError("watcher bug")

    endings.watch("a", broken)
    endings.watch("b", told.append)
    endings.hold(TaskEnded("a", 1, 0, b"x"))
    endings.hold(TaskEnded("b", 2, 0, b"y"))
    endings.release()
    assert told == [[TaskEnded("b", 2, 0, b"y")]]
