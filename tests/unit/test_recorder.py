"""The attempt recorder alone: a real store and admission, a stand-in executor."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from oomguard.config import RunnerConfig
from oomguard.executors.events import AttemptEnded, Requeued
from oomguard.jobs import FailureClass
from oomguard.notify import AttemptNotice
from oomguard.scheduler.admission import Admission, Estimates, Role
from oomguard.scheduler.recorder import AttemptRecorder
from oomguard.store.records import NewTask
from oomguard.store.sqlite import SqliteStore, TaskRow
from oomguard.store.writes import AttemptRow

MIB = 1024 * 1024


class StandInExecutor:
    """Records what the recorder asks of an executor."""

    def __init__(self) -> None:
        self.killed: list[tuple[int, str]] = []
        self.released: list[Any] = []

    def kill(self, run: Any, reason: str, evidence: dict[str, Any]) -> None:
        self.killed.append((run.attempt_id, reason))

    def release(self, worker: Any) -> None:
        self.released.append(worker)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "s.sqlite")
    s.create_job("j1", name="t", fn="m:f", agg="m:g")
    rows = [
        NewTask(
            job_id="j1",
            grp=g,
            kind="task",
            replicate=0,
            fn="m:f",
            params=json.dumps({"x": g}),
            state="ready",
        )
        for g in range(3)
    ]
    rows += [
        NewTask(
            job_id="j1", grp=g, kind="aggregate", fn="m:g", params="{}", state="pending", deps=1
        )
        for g in range(3)
    ]
    s.add_tasks(rows, job_id="j1", groups=3)
    s.set_job_groups("j1", 3, sealed=True)
    yield s
    s.close()


@pytest.fixture
def recorder(store: SqliteStore) -> AttemptRecorder:
    from oomguard.store.writes import PendingWrites

    requeued: list[TaskRow] = []
    rec = AttemptRecorder(
        config=RunnerConfig(store=str(store.path)),
        scheduler_id="s1",
        store=store,
        writes=PendingWrites(),
        admission=Admission(budget=1024 * MIB, cap=512 * MIB),
        estimates=Estimates(default=64 * MIB),
        executor=StandInExecutor(),  # type: ignore[arg-type]
        kmsg=None,
        requeue=requeued.append,
        next_attempt=1,
    )
    rec.requeued = requeued  # type: ignore[attr-defined]
    return rec


def _begin(recorder: AttemptRecorder, store: SqliteStore, n: int = 1) -> list[Any]:
    tasks = store.take_ready("j1", n, 10)
    return [recorder.begin(t, "k", Role.NORMAL, 64 * MIB, time.time(), admit=True) for t in tasks]


def _commit(recorder: AttemptRecorder, store: SqliteStore) -> None:
    writes = recorder.writes.take()
    recorder.writes_taken()
    store.apply(writes)
    recorder.notices.release()


def test_an_attempt_that_ends_before_its_claim_is_committed_is_inserted_ended(
    recorder: AttemptRecorder, store: SqliteStore
) -> None:
    (run,) = _begin(recorder, store)
    recorder.handle(
        AttemptEnded(run.attempt_id, True, b"\x80\x04K\x01.", peak_bytes=3 * MIB, worker="w1")
    )
    claims = [w.params for w in recorder.writes if w.query == "insert_attempt"]
    assert len(claims) == 1 and isinstance(claims[0], AttemptRow)
    assert claims[0].state == "succeeded" and claims[0].peak_bytes == 3 * MIB
    assert [w.query for w in recorder.writes if w.query == "end_attempt"] == []
    _commit(recorder, store)
    assert store.queries.counts("j1")["succeeded"] == 1
    # Its aggregation was released: 2 tasks and 1 aggregation ready, 2 pending.
    assert (store.queries.counts("j1")["ready"], store.queries.counts("j1")["pending"]) == (3, 2)
    assert recorder.parts_due == {"j1"} and not recorder.running
    assert recorder.admission.total == 0


def test_a_failed_task_fails_its_aggregation_and_is_due_for_parts(
    recorder: AttemptRecorder, store: SqliteStore
) -> None:
    (run,) = _begin(recorder, store)
    _commit(recorder, store)
    recorder.handle(
        AttemptEnded(run.attempt_id, False, None, FailureClass.ERROR, "ValueError: x", {})
    )
    _commit(recorder, store)
    (failed, agg) = store.queries.failed_tasks("j1")
    assert failed.failure_class == "error" and failed.error
    assert agg.failure_class == "upstream_failed"
    assert recorder.parts_due == {"j1"}


def test_an_attempt_requeued_before_its_claim_is_committed_leaves_no_trace(
    recorder: AttemptRecorder, store: SqliteStore
) -> None:
    (run,) = _begin(recorder, store)
    recorder.handle(Requeued(run.attempt_id))
    assert list(recorder.writes) == []
    assert recorder.requeued == [run.task] and run.task.attempts == 0  # type: ignore[attr-defined]
    assert not recorder.running and recorder.admission.total == 0


def test_an_event_that_cannot_be_recorded_fails_only_its_attempt(
    recorder: AttemptRecorder, store: SqliteStore
) -> None:
    a, b = _begin(recorder, store, 2)
    _commit(recorder, store)
    # A failure class oomguard does not know: recording it raises.
    recorder.handle(AttemptEnded(a.attempt_id, False, None, "no_such_class", "?", {}))  # type: ignore[arg-type]
    recorder.handle(AttemptEnded(b.attempt_id, True, b"\x80\x04N."))
    _commit(recorder, store)
    (failure,) = [f for f in store.queries.failed_tasks("j1") if f.kind == "task"]
    assert failure.failure_class == "error"
    assert failure.error is not None
    assert "oomguard could not record this attempt: ValueError" in failure.error
    assert store.queries.counts("j1")["succeeded"] == 1


def test_a_commit_group_that_fails_is_applied_task_by_task(
    recorder: AttemptRecorder, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = _begin(recorder, store, 3)
    _commit(recorder, store)

    def no_space(data: bytes) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.blobs, "put", no_space)
    big = b"x" * (2 * MIB)  # over the blob threshold: written to a file, which fails
    recorder.handle(AttemptEnded(a.attempt_id, True, b"\x80\x04K\x01."))
    recorder.handle(AttemptEnded(b.attempt_id, True, big))
    recorder.handle(AttemptEnded(c.attempt_id, True, b"\x80\x04K\x03."))
    writes = recorder.writes.take()
    with pytest.raises(OSError):
        store.apply(writes)
    recorder.apply_by_task(writes)
    counts = store.queries.counts("j1")
    assert counts["succeeded"] == 2 and counts["failed"] == 2  # b and its aggregation
    failure = next(f for f in store.queries.failed_tasks("j1") if f.task_id == b.task.id)
    assert failure.error is not None
    assert failure.error.startswith("error: result could not be stored: OSError")
    assert failure.attempts[-1].failure_class == "error"


def test_every_ending_is_told_to_the_notifier(
    recorder: AttemptRecorder, store: SqliteStore
) -> None:
    from oomguard.notify import AttemptNotice, MemoryNotifier

    notifier = MemoryNotifier()
    recorder.notices.notify = notifier.notify
    a, b, c = _begin(recorder, store, 3)
    b.task.retries = 1
    a.worker = SimpleNamespace(name="w1", pid=123)  # as the executor sets it
    _commit(recorder, store)
    recorder.handle(
        AttemptEnded(a.attempt_id, True, b"\x80\x04K\x01.", peak_bytes=3 * MIB, worker="w1")
    )
    tb = "Traceback (most recent call last):\nValueError: x\n"
    recorder.handle(
        AttemptEnded(
            b.attempt_id,
            False,
            None,
            FailureClass.ERROR,
            "ValueError: x",
            {"traceback": tb},
            worker="w2",
        )
    )
    recorder.handle(
        AttemptEnded(c.attempt_id, False, None, FailureClass.ERROR, "ValueError: y", {})
    )
    _commit(recorder, store)
    recorder.interrupt(_begin(recorder, store, 1)[0])  # a's aggregation, now ready
    assert len(notifier.notices) == 3  # the interruption waits for its commit
    _commit(recorder, store)
    notices = notifier.notices
    assert all(isinstance(n, AttemptNotice) for n in notices)
    ok, retried, final, stopped = cast(list[AttemptNotice], notices)
    assert (ok.outcome, ok.peak_bytes, ok.worker, ok.function) == (
        "succeeded",
        3 * MIB,
        "w1",
        "m:f",
    )
    assert (retried.outcome, retried.failure_class, retried.final_class) == (
        "retrying",
        "error",
        None,
    )
    assert retried.retry_at is not None and retried.traceback == tb
    assert (retried.task_id, retried.job_id, retried.attempt, retried.memory_key) == (
        b.task.id,
        "j1",
        1,
        "k",
    )
    assert retried.limit_bytes == 64 * MIB and retried.message == "ValueError: x"
    assert retried.worker == "w2"  # from the event when the executor set none
    assert (final.outcome, final.final_class, final.final) == ("failed", "error", True)
    assert stopped.outcome == "interrupted"


def test_a_notifier_that_raises_never_fails_an_attempt(
    recorder: AttemptRecorder, store: SqliteStore
) -> None:
    def broken(notice: object) -> None:
        raise RuntimeError("notifier bug")

    recorder.notices.notify = broken
    (run,) = _begin(recorder, store)
    _commit(recorder, store)
    recorder.handle(AttemptEnded(run.attempt_id, True, b"\x80\x04K\x01."))
    _commit(recorder, store)
    assert store.queries.counts("j1")["succeeded"] == 1


def test_notices_wait_for_their_commit_and_skip_what_was_not_stored(
    recorder: AttemptRecorder, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oomguard.notify import MemoryNotifier

    notifier = MemoryNotifier()
    recorder.notices.notify = notifier.notify
    a, b = _begin(recorder, store, 2)
    _commit(recorder, store)

    def no_space(data: bytes) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.blobs, "put", no_space)
    recorder.handle(AttemptEnded(a.attempt_id, True, b"\x80\x04K\x01."))
    recorder.handle(AttemptEnded(b.attempt_id, True, b"x" * (2 * MIB)))
    assert notifier.notices == []  # nothing is told before the commit
    writes = recorder.writes.take()
    with pytest.raises(OSError):
        store.apply(writes)
    recorder.apply_by_task(writes)
    recorder.notices.release()
    # b's result could not be stored: the store says it failed, so no "succeeded" for it.
    assert [(n.task_id, n.outcome) for n in cast(list[AttemptNotice], notifier.notices)] == [
        (a.task.id, "succeeded")
    ]


def test_an_attempt_that_fails_after_its_task_was_cancelled_leaves_it_cancelled(
    recorder: AttemptRecorder, store: SqliteStore
) -> None:
    # The loop found the task cancelled (or its job stopped) and is killing the attempt,
    # but the attempt's own failure came first: it is not retried, nor its task failed.
    from oomguard.notify import MemoryNotifier

    notifier = MemoryNotifier()
    recorder.notices.notify = notifier.notify
    (run,) = _begin(recorder, store)
    run.task.retries = 3
    _commit(recorder, store)
    store.admin.cancel("j1")
    run.cancelled = True  # as the loop's cancel check marks it before the kill
    recorder.handle(
        AttemptEnded(run.attempt_id, False, None, FailureClass.ERROR, "MainGuardError: x", {})
    )
    _commit(recorder, store)
    assert store.task_state(run.task.id) == "cancelled"
    assert not recorder.running and recorder.admission.total == 0
    (notice,) = cast(list[AttemptNotice], notifier.notices)
    assert (notice.outcome, notice.failure_class, notice.retry_at) == ("cancelled", "error", None)
    (attempt,) = store.queries.attempts(run.task.id)
    assert attempt.state == "failed" and attempt.failure_class == "error"
