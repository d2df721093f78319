"""An attempt in flight: :class:`Running`, what the scheduler knows of one attempt from its
claim to its end (the executor sees it as an :class:`~oomguard.executors.base.Attempt`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomguard.executors.base import WorkerRef
from oomguard.scheduler.admission import Role

if TYPE_CHECKING:
    from oomguard.store.records import TaskRow
    from oomguard.store.writes import AttemptRow


@dataclass
class Running:
    """An attempt in flight."""

    attempt_id: int
    task: TaskRow
    n: int
    key: str | None
    role: Role
    limit: int
    started: float
    worker: WorkerRef | None = None
    deadline: float | None = None
    #: the not-yet-committed insert of this attempt (updated in place if it ends first)
    claim: AttemptRow | None = None
    #: at the cap its kill proves its key unfit: measured clean of memory an earlier
    #: attempt left in its worker (worker/hygiene.py)
    clean: bool = False
    #: stopped because its key was OOM-killed below the cap meanwhile: it goes back to the
    #: queue uncounted however it ends, unless it succeeded
    yielded: bool = False
    #: its task was cancelled (or its job stopped) while it ran: it is being killed, and
    #: however it ends, its task stays cancelled (no retry, no failure of the task)
    cancelled: bool = False

    @property
    def probe(self) -> bool:
        return self.role.probes


#: why an attempt stopped to yield to its key's cap probe went back to the queue
YIELDED = "its memory key was OOM-killed below the cap meanwhile: it waits for the cap probe"
