"""Memory admission: estimates per memory key, and a budget they must fit in.

No processes here: pure logic, unit-tested on its own.

* An attempt is admitted with a *limit*: its estimate plus headroom, capped at the most one
  attempt may get (``worker_memory`` and the budget). The limit is what the kernel enforces
  on its worker, and what is counted against the budget, so the sum of the limits of the
  running attempts never exceeds the budget.
* Estimates are declared (``@task(memory=...)``, ``--task-memory``) or learned per memory
  key from the peak memory of finished attempts, with a margin. A key never seen starts
  from ``default_task_memory`` and runs one attempt at a time (a *probe*) until its first
  attempt ends: a whole wave of tasks is never started into an unknown OOM.
* An OOM-killed attempt's task is retried with at least double its limit and more than its
  peak; its key's estimate grows with it.
* Small tasks fill the room large ones leave, but a task that has waited longer than
  ``starvation_wait`` gets room reserved: nothing else is admitted until it fits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

MIB = 1024 * 1024
MARGIN = 1.2
MIN_HEADROOM = 64 * MIB
MIN_ESTIMATE = 16 * MIB


@dataclass
class KeyEstimate:
    bytes: int
    peak_bytes: int = 0
    samples: int = 0


@dataclass
class Estimates:
    default: int
    known: dict[str, KeyEstimate] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)

    def get(self, key: str | None) -> tuple[int, bool]:
        """``(estimate, learned)`` for a memory key."""
        if key is not None and key in self.known:
            return self.known[key].bytes, self.known[key].samples > 0
        return self.default, False

    def learn(self, key: str | None, peak: int | None) -> None:
        """Fold the peak of a successful attempt into the key's estimate."""
        if key is None or not peak:
            return
        est = self.known.get(key)
        if est is None:
            est = self.known[key] = KeyEstimate(bytes=0)
        est.peak_bytes = max(est.peak_bytes, peak)
        est.samples += 1
        # The largest peak seen with a margin: memory use of one key varies little, and
        # an estimate that is too small costs an OOM kill while one too large costs packing.
        est.bytes = max(MIN_ESTIMATE, int(est.peak_bytes * MARGIN))
        self.dirty.add(key)

    def raise_to(self, key: str | None, estimate: int, peak: int | None) -> None:
        """After an OOM kill: the key needs at least ``estimate``."""
        if key is None:
            return
        est = self.known.setdefault(key, KeyEstimate(bytes=estimate))
        est.bytes = max(est.bytes, estimate)
        est.peak_bytes = max(est.peak_bytes, peak or 0)
        self.dirty.add(key)

    def take_dirty(self) -> list[tuple[str, int, int, int]]:
        rows = [
            (k, self.known[k].bytes, self.known[k].peak_bytes, self.known[k].samples)
            for k in sorted(self.dirty)
        ]
        self.dirty.clear()
        return rows


def escalate(limit: int | None, peak: int | None, estimate: int) -> int:
    """The estimate for the retry of an OOM-killed attempt: at least double, above the peak."""
    base = max(limit or 0, estimate)
    return max(2 * base, int((peak or 0) * 1.5), MIN_ESTIMATE)


@dataclass
class Admission:
    budget: int
    #: the most one attempt may get: min(worker_memory, budget)
    cap: int
    starvation_wait: float = 10.0
    clock: Callable[[], float] = time.monotonic
    admitted: dict[int, int] = field(default_factory=dict)
    probing: dict[str, int] = field(default_factory=dict)
    #: task id -> when it was first refused for lack of room
    waiting: dict[int, float] = field(default_factory=dict)
    #: the most ever admitted at once (for status and tests)
    high_water: int = 0

    @property
    def total(self) -> int:
        return sum(self.admitted.values())

    @property
    def free(self) -> int:
        return self.budget - self.total

    def limit_for(self, estimate: int) -> int:
        """The kernel limit for an attempt with this estimate: headroom, capped."""
        headroom = max(int(estimate * 0.25), MIN_HEADROOM)
        return min(self.cap, estimate + headroom)

    def reserved_for(self) -> int | None:
        """The task that has waited past ``starvation_wait``, if any (oldest first)."""
        now = self.clock()
        oldest = None
        for task_id, since in self.waiting.items():
            if now - since >= self.starvation_wait and (
                oldest is None or since < self.waiting[oldest]
            ):
                oldest = task_id
        return oldest

    def try_admit(self, task_id: int, limit: int, key: str | None, learned: bool) -> bool:
        """Admit the attempt when its limit fits and no starving task comes first."""
        if key is not None and not learned and self.probing.get(key, 0) > 0:
            return False  # one probe per unknown key at a time
        starving = self.reserved_for()
        if starving is not None and starving != task_id:
            return False
        if limit > self.free and self.admitted:
            self.waiting.setdefault(task_id, self.clock())
            return False
        # Alone, a task may take the whole cap even if that is the whole budget.
        self.waiting.pop(task_id, None)
        return True

    def start(self, attempt_id: int, limit: int, key: str | None, learned: bool) -> None:
        self.admitted[attempt_id] = limit
        if key is not None and not learned:
            self.probing[key] = self.probing.get(key, 0) + 1
        self.high_water = max(self.high_water, self.total)

    def end(self, attempt_id: int, key: str | None, was_probe: bool) -> None:
        self.admitted.pop(attempt_id, None)
        if was_probe and key is not None and self.probing.get(key, 0) > 0:
            self.probing[key] -= 1
            if not self.probing[key]:
                del self.probing[key]

    def forget(self, task_id: int) -> None:
        self.waiting.pop(task_id, None)
