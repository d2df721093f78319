"""Memory admission: what each memory key is known to need, and a budget it must fit in.

No processes here: pure logic, unit-tested on its own. docs/ARCHITECTURE.md ("Admission")
tells the whole story; in short:

* An attempt is admitted with a *limit*: its estimate plus headroom, capped at the most one
  attempt may get (``cap``: ``worker_memory`` and the budget). The limit is what the kernel
  enforces on its worker, and what is counted against the budget, so the sum of the limits
  of the running attempts never exceeds the budget.
* A memory key is in one of four states (:class:`KeyState`):

  - ``unknown``: never seen to finish or die. One *probe* runs at its estimate (declared
    with ``--task-memory``/``@task(memory=)``, else the default); while it runs, other tasks
    of the key start only where the budget gives each of them a *generous* limit (at least
    :data:`SIBLING_FACTOR` times the probe's, and that much), so idle workers are used without
    starting a wave into an OOM, and without taking the room other keys' probes need.
  - ``known``: learned from peaks of finished attempts (a margin from their spread), and
    never below a limit that killed the key. Tasks run packed.
  - ``learning``: an attempt was OOM-killed at a limit below the cap. The kill is
    knowledge for the whole key at once: its estimate is above that limit, and one attempt
    (a *cap probe*) runs with the most oomguard can give, room reserved for it, to learn the
    real peak in one step; the key's other tasks wait for it, tasks of other keys go on.
  - ``unfit``: an attempt was OOM-killed at the cap. Every task of the key fails
    ``needs_more_memory`` without running, in this job and later ones, until the cap grows.

* Declared estimates are hints: a key's knowledge wins over them when it is larger.
* Small tasks fill the room large ones leave, but a task that has waited longer than
  ``starvation_wait`` gets room reserved: nothing else is admitted until it fits.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from oomguard.store.records import KeyEstimate as StoredEstimate

MIB = 1024 * 1024
#: the least margin above the largest peak seen (a fraction of it)
MARGIN = 0.1
#: standard deviations of the peaks seen added as margin when the peaks vary
SPREAD = 3.0
MIN_HEADROOM = 64 * MIB
MIN_ESTIMATE = 16 * MIB
#: a task of an unknown key starts beside its probe only with this many times its limit
SIBLING_FACTOR = 4


class KeyState(str, enum.Enum):
    UNKNOWN = "unknown"
    KNOWN = "known"
    LEARNING = "learning"
    UNFIT = "unfit"


class Role(str, enum.Enum):
    """Why an attempt was admitted with its limit."""

    NORMAL = "normal"
    #: the first attempt of an unknown key, at its estimate (one at a time per key)
    PROBE = "probe"
    #: an attempt of an unknown key beside its probe, with a generous limit
    SIBLING = "sibling"
    #: after a kill below the cap: one attempt with the cap, to learn the peak in one step
    CAP_PROBE = "cap_probe"

    @property
    def probes(self) -> bool:
        return self in (Role.PROBE, Role.CAP_PROBE)


@dataclass
class KeyEstimate:
    bytes: int
    peak_bytes: int = 0
    samples: int = 0
    #: sum and sum of squares of the peaks seen (their spread sets the margin)
    peak_sum: float = 0.0
    peak_sq: float = 0.0
    #: the largest limit an attempt of the key was OOM-killed at (0: none)
    killed_at: int = 0
    #: the cap an attempt of the key was OOM-killed at: the key needs more (0: none)
    unfit_cap: int = 0
    #: what proved the key unfit (an attempt, its limit, its peak)
    proof: str = ""
    #: killed below the cap and not finished since: a cap probe is due
    learning: bool = False

    def state(self) -> KeyState:
        if self.unfit_cap:
            return KeyState.UNFIT
        if self.learning:
            return KeyState.LEARNING
        if self.samples:
            return KeyState.KNOWN
        return KeyState.UNKNOWN

    def knowledge(self, key: str) -> StoredEstimate:
        """What it knows, as a record (what the store keeps of the key)."""
        return StoredEstimate(
            key,
            self.bytes,
            self.peak_bytes,
            self.samples,
            self.killed_at,
            self.unfit_cap,
            self.proof,
            self.peak_sum,
            self.peak_sq,
        )


@dataclass
class Estimates:
    default: int
    known: dict[str, KeyEstimate] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)

    #: the cap the estimates were loaded under (:meth:`learn_shared` loads with it)
    cap: int = 0

    def learn_shared(self, rows: Mapping[str, StoredEstimate]) -> int:
        """Take what other schedulers sharing the store (replicas) taught: a stored key this
        one does not know, or knows from fewer samples or a smaller kill, unless it has
        news of its own about it not yet stored. Returns how many keys were taken."""
        newer = {
            key: r
            for key, r in rows.items()
            if key not in self.dirty
            and (
                (est := self.known.get(key)) is None
                or r.samples > est.samples
                or r.killed_at > est.killed_at
                or (r.unfit_cap and not est.unfit_cap)
            )
        }
        if newer:
            self.load(newer, self.cap)
        return len(newer)

    def load(self, rows: Mapping[str, StoredEstimate], cap: int) -> None:
        """Take the keys a store remembers (by key). A key proved unfit at a smaller cap
        than today's is tried again (with the cap, as after a kill below it)."""
        self.cap = cap
        for key, r in rows.items():
            est = KeyEstimate(
                bytes=r.bytes,
                peak_bytes=r.peak_bytes,
                samples=r.samples,
                peak_sum=r.peak_sum,
                peak_sq=r.peak_sq,
                killed_at=r.killed_at,
                unfit_cap=r.unfit_cap,
                proof=r.proof,
            )
            if est.unfit_cap and est.unfit_cap < cap:
                est.killed_at = max(est.killed_at, est.unfit_cap)
                est.unfit_cap, est.proof = 0, ""
                self.dirty.add(key)
            est.learning = bool(est.killed_at) and est.peak_bytes <= est.killed_at
            self.known[key] = est

    def state(self, key: str | None) -> KeyState:
        est = self.known.get(key) if key is not None else None
        return KeyState.UNKNOWN if est is None else est.state()

    def proof(self, key: str | None) -> str:
        est = self.known.get(key) if key is not None else None
        return est.proof if est is not None else ""

    def estimate(self, key: str | None, declared: int | None) -> int:
        """The estimate for a task of ``key``: what the key is known to need, else its
        declared estimate, else the default; a declaration is a floor, never a ceiling
        that a kill proved wrong."""
        est = self.known.get(key) if key is not None else None
        base = declared or self.default
        if est is None or not (est.samples or est.killed_at):
            return base
        return max(est.bytes, declared or 0)

    def get(self, key: str | None) -> tuple[int, bool]:
        """``(estimate, learned)`` for a memory key."""
        est = self.known.get(key) if key is not None else None
        if est is not None and est.samples:
            return est.bytes, True
        return self.estimate(key, None), False

    def learn(self, key: str | None, peak: int | None) -> None:
        """Fold the peak of a successful attempt into the key's estimate: the largest peak
        plus a margin from the spread of the peaks, never below a limit that killed it."""
        if key is None or not peak:
            return
        est = self.known.get(key)
        if est is None:
            est = self.known[key] = KeyEstimate(bytes=0)
        est.peak_bytes = max(est.peak_bytes, peak)
        est.samples += 1
        est.peak_sum += peak
        est.peak_sq += float(peak) * peak
        mean = est.peak_sum / est.samples
        spread = math.sqrt(max(0.0, est.peak_sq / est.samples - mean * mean))
        margin = max(MARGIN * est.peak_bytes, SPREAD * spread)
        est.bytes = max(MIN_ESTIMATE, int(est.peak_bytes + margin), est.killed_at)
        est.learning = False
        self.dirty.add(key)

    def killed(
        self,
        key: str | None,
        limit: int,
        peak: int | None,
        cap: int,
        proof: str,
        explicit: bool = True,
    ) -> KeyState:
        """An attempt of ``key`` was OOM-killed at its own ``limit``: at the cap the key is
        unfit (an ``explicit`` key only: a coarse default key fails just that task); below
        it, its estimate is above ``limit`` at once and a cap probe is due."""
        if key is None:
            return KeyState.UNKNOWN
        est = self.known.setdefault(key, KeyEstimate(bytes=0))
        if limit >= cap:
            if explicit:
                est.unfit_cap = cap
                est.proof = proof
        else:
            est.killed_at = max(est.killed_at, limit)
            est.bytes = max(est.bytes, min(cap, escalate(limit, peak, est.bytes)))
            est.learning = True
        self.dirty.add(key)
        return est.state()

    def take_dirty(self) -> list[StoredEstimate]:
        """What changed about keys since the last call (to be stored)."""
        rows = [self.known[k].knowledge(k) for k in sorted(self.dirty)]
        self.dirty.clear()
        return rows


def escalate(limit: int | None, peak: int | None, estimate: int) -> int:
    """The estimate for the retry of an OOM-killed attempt: at least double, above the peak."""
    base = max(limit or 0, estimate)
    return max(2 * base, int((peak or 0) * 1.5), MIN_ESTIMATE)


@dataclass(frozen=True)
class Placement:
    limit: int
    role: Role


@dataclass
class Admission:
    budget: int
    #: the most one attempt may get: min(worker_memory, budget)
    cap: int
    starvation_wait: float = 10.0
    clock: Callable[[], float] = time.monotonic
    admitted: dict[int, int] = field(default_factory=dict)
    #: memory key -> its probes running (probes and cap probes)
    probing: dict[str, int] = field(default_factory=dict)
    #: task id -> when it was first refused for lack of room
    waiting: dict[int, float] = field(default_factory=dict)
    #: memory key -> the task waiting to be its cap probe
    cap_waits: dict[str, int] = field(default_factory=dict)
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

    def place(
        self, task_id: int, key: str | None, state: KeyState, estimate: int, idle: int = 1
    ) -> Placement | None:
        """The limit and role a task of ``key`` would start with now, or None: it waits.
        (A task of an ``unfit`` key never starts: the caller fails it.)"""
        if state is KeyState.LEARNING:
            if key is not None and self.probing.get(key, 0) > 0:
                return None  # its cap probe runs: the key's other tasks wait for it
            if key is not None and self.cap_waits.setdefault(key, task_id) != task_id:
                return None  # another task of the key waits to be its cap probe
            # Room is reserved for the cap probe at once: nothing else starts before it.
            self.waiting.setdefault(task_id, self.clock() - self.starvation_wait)
            placement = self._fit(task_id, Placement(self.cap, Role.CAP_PROBE))
            if placement is not None and key is not None:
                del self.cap_waits[key]
            return placement
        limit = self.limit_for(estimate)
        if state is KeyState.UNKNOWN and key is not None and self.probing.get(key, 0) > 0:
            share = min(self.cap, self.free // max(1, idle))
            if share < SIBLING_FACTOR * limit:
                return None
            # Generous, not the whole budget: other keys' probes still find room. A sibling
            # killed below the cap stops its probe (scheduler/recorder.py), so the key is
            # still killed at most twice.
            return self._fit(task_id, Placement(SIBLING_FACTOR * limit, Role.SIBLING))
        role = Role.PROBE if state is KeyState.UNKNOWN and key is not None else Role.NORMAL
        return self._fit(task_id, Placement(limit, role))

    def _fit(self, task_id: int, placement: Placement) -> Placement | None:
        starving = self.reserved_for()
        if starving is not None and starving != task_id:
            return None
        if placement.limit > self.free and self.admitted:
            self.waiting.setdefault(task_id, self.clock())
            return None
        # Alone, a task may take the whole cap even if that is the whole budget.
        self.waiting.pop(task_id, None)
        return placement

    def start(self, attempt_id: int, limit: int, key: str | None, role: Role) -> None:
        self.admitted[attempt_id] = limit
        if key is not None and role.probes:
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
        if self.cap_waits:  # on every claim: nothing to look through, mostly
            for key in [k for k, t in self.cap_waits.items() if t == task_id]:
                del self.cap_waits[key]
