"""A Dask worker process's heap: large buffers from it, and freed memory given back.

The nanny's ``MALLOC_TRIM_THRESHOLD_`` turns glibc's adaptive mmap threshold off in the
Dask worker (see :data:`~.host_pool.CHILD_ENV_DROP`); :func:`large_buffers_from_heap`
turns large buffers back to the heap where the worker runs no task itself, and
:func:`trim` gives freed memory back to the OS after a group of attempts.
"""

from __future__ import annotations

import gc

from oomguard.worker.hygiene import load_libc, malloc_trim

#: glibc's ``mallopt`` parameters
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: buffers up to this size come from the heap in a Dask worker whose attempts run in
#: children (glibc's largest mmap threshold)
HEAP_BUFFERS = 32 * 1024 * 1024


def large_buffers_from_heap() -> None:
    """In a Dask worker that runs no task itself: results (each copied a few times on its
    way through) come from the heap, reused, not a fresh ``mmap`` each, page-faulted in:
    the nanny's ``MALLOC_TRIM_THRESHOLD_`` turned glibc's adaptive threshold off. Free
    memory above twice that much is still given back."""
    libc = load_libc()
    mallopt = getattr(libc, "mallopt", None) if libc else None
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, HEAP_BUFFERS)
        mallopt(M_TRIM_THRESHOLD, 2 * HEAP_BUFFERS)


def trim() -> None:
    """Collect garbage and give what was freed back to the OS (``malloc_trim(0)``)."""
    gc.collect()
    malloc_trim()
