"""Notices of how attempts ended (Sentry, webhooks, JSON logs), held until the commit that
records them: only what the store holds is ever told. A notice the webhooks are to get is
also queued as one outbox row in that very commit (``keep``: notify/durable.py), so it
outlives a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from oomguard.notify.notice import AttemptNotice, to_json

if TYPE_CHECKING:
    from oomguard.jobs.model import FailureClass
    from oomguard.scheduler.retries import Decision
    from oomguard.scheduler.running import Running
    from oomguard.store.writes import PendingWrites

log = logging.getLogger("oomguard.scheduler")


class HeldNotices:
    """Notices built as attempts end, sent by :meth:`release` after their commit."""

    def __init__(
        self,
        notify: Callable[[AttemptNotice], None] | None,
        keep: Callable[[AttemptNotice], bool] | None = None,
        writes: PendingWrites | None = None,
    ) -> None:
        self.notify = notify
        self.keep = keep
        self.writes = writes
        self.held: list[AttemptNotice] = []
        #: tasks whose own writes could not be stored in the last commit: none is told
        self.unrecorded: set[int] = set()

    def tell(
        self,
        run: Running,
        outcome: str,
        fc: FailureClass | None = None,
        evidence: dict[str, object] | None = None,
        peak: int | None = None,
        decision: Decision | None = None,
    ) -> None:
        """Hold a notice of how ``run`` ended until the commit that records it
        (:meth:`release`); it never fails the attempt."""
        if self.notify is None:
            return
        try:
            final = decision is not None and decision.retry_at is None
            notice = AttemptNotice.of(
                job_id=run.task.job_id,
                task_id=run.task.id,
                attempt_id=run.attempt_id,
                attempt=run.n,
                function=run.task.fn,
                outcome=outcome,
                failure_class=fc.value if fc is not None else None,
                final_class=decision.final_class.value if decision and final else None,
                message=decision.message if decision else None,
                memory_key=run.key,
                limit_bytes=run.limit or None,
                peak_bytes=peak,
                worker=run.worker.name if run.worker is not None else None,
                retry_at=decision.retry_at if decision else None,
                evidence=evidence,
            )
            self.held.append(notice)
            if self.keep is not None and self.writes is not None and self.keep(notice):
                # One row in the commit that records the attempt's end (successes: none).
                self.writes.outbox(notice.task_id, notice.at, *to_json(notice))
        except Exception:
            log.exception("could not notify the end of attempt %s", run.attempt_id)

    def release(self) -> None:
        """The writes queued so far are committed: send the notices they record. A task
        whose own writes could not be stored (``AttemptRecorder.apply_by_task``) sends
        none: the store says it failed, whatever its attempt reported."""
        held, self.held = self.held, []
        unrecorded, self.unrecorded = self.unrecorded, set()
        if self.notify is None:
            return
        for notice in held:
            if notice.task_id in unrecorded:
                continue
            try:
                self.notify(notice)
            except Exception:
                log.exception("could not notify the end of attempt %s", notice.attempt_id)
