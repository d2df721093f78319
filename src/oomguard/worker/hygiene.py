"""When a worker gives memory back to the kernel (docs/ARCHITECTURE.md, "Worker memory").

Collecting garbage and calling ``malloc_trim(0)`` after every attempt made each attempt
fault its whole heap in again: on a numpy sweep, 3-4 times the page faults and several
times the system time of a plain process pool. Memory freed by one attempt is now kept
for the next (as a plain pool keeps it) and given back only where it is needed:

* **before an attempt at the cap** (a cap probe): its kill proves its key unfit, so it
  must not be killed for memory a previous attempt left;
* **before an attempt whose limit leaves less room than the worker holds** beyond its
  floor (what it held after its last trim): its headroom is for its own growth, and a
  kill must be the fault of the task that caused it;
* **before the worker's limit is lowered** (the kernel refuses below its usage on v1 and
  reclaims, then OOM-kills, on v2): the worker lowers its own limit, after trimming;
* **before a decision to recycle on growth**: what a collection gives back is not growth;
* **when the worker has been idle** :data:`IDLE_TRIM_S`: memory an idle worker holds is
  memory the budget's other attempts do not have.

An attempt that ran within memory a previous attempt left (started with more than
:data:`SLACK` retained and never grew past it) has a peak that is only an upper bound, too
high by at most what was retained (less than the headroom, or it would have been given
back): it says so in its evidence (``peak_bound``) and the scheduler learns from it only
for a probe, whose estimate is then that much on the safe side.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

MIB = 1024 * 1024
#: memory a worker may hold beyond its floor and still count as clean
SLACK = 16 * MIB
#: the least headroom admission gives an attempt (scheduler/admission.py MIN_HEADROOM)
MIN_ROOM = 64 * MIB
#: seconds without a new batch after which an idle worker gives its memory back
IDLE_TRIM_S = 0.5

_libc: ctypes.CDLL | bool | None = None


def load_libc() -> ctypes.CDLL | None:
    global _libc  # process-local cache in the worker, not shared state
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name, use_errno=True) if name else False
    return _libc if isinstance(_libc, ctypes.CDLL) else None


def malloc_trim() -> bool:
    """Give malloc's free pages back to the kernel (glibc); False where there is none."""
    libc = load_libc()
    trim = getattr(libc, "malloc_trim", None) if libc else None
    if trim is None:
        return False
    trim(0)
    return True


#: glibc's ``mallopt`` parameters
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: allocations below this come from the heap, so that what one attempt frees the next
#: reuses (glibc's own threshold rises to this, its largest, only as it sees large frees)
MMAP_THRESHOLD = 32 * MIB
#: free memory at the heap's top that ``free()`` keeps instead of giving it back at once
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds, so that whether a worker gives memory back
    after each ``free()`` no longer depends on its allocation history.

    glibc adjusts both as a process frees large blocks; a worker whose first large frees
    were small kept its thresholds low and shrank its heap after almost every free, so its
    next attempt faulted the same pages in again: 3-4 times the page faults of a run where
    they had risen, from the same tasks and the same batches. With them fixed the worker
    keeps freed memory as a long-running process does, and gives it back when it must, by
    :meth:`Hygiene.trim` (``malloc_trim`` ignores the threshold). False without glibc."""
    libc = load_libc()
    mallopt = getattr(libc, "mallopt", None) if libc else None
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def room_for(limit: int) -> int:
    """The headroom an attempt admitted with ``limit`` has above its estimate.

    Admission gives ``estimate + max(estimate / 4, MIN_HEADROOM)`` (below the cap), so the
    headroom is ``max(limit / 5, MIN_HEADROOM)``; attempts at the cap run clean anyway."""
    return max(limit // 5, MIN_ROOM)


class Hygiene:
    """One worker's memory hygiene: its floor, and when to trim.

    ``rss`` reads the worker's resident memory (bytes)."""

    def __init__(self, rss: Callable[[], int]) -> None:
        self._rss = rss
        self.floor = 0
        self.trims = 0

    def trim(self) -> int:
        """Collect garbage and give free memory back; the new floor."""
        gc.collect()
        malloc_trim()
        self.trims += 1
        self.floor = self._rss()
        return self.floor

    def retained(self) -> int:
        """Bytes held beyond the floor (freed by earlier attempts, or still garbage)."""
        return max(0, self._rss() - self.floor)

    def before(self, limit: int | None, clean: bool) -> int:
        """Trim before an attempt (or a batch) if it needs it; bytes retained at its start."""
        held = self.retained()
        if held > SLACK and (clean or (limit is not None and held > room_for(limit))):
            self.trim()
            return 0
        return held

    def idle(self) -> None:
        """The worker has waited :data:`IDLE_TRIM_S` for work: give memory back."""
        if self.retained() > SLACK:
            self.trim()
