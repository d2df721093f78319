"""A worker keeps what it frees for its next attempt (worker/hygiene.py
``keep_freed_memory``): with glibc's thresholds fixed, a block freed and allocated again is
reused, not unmapped and faulted in anew each time, whatever the process freed before."""

from __future__ import annotations

import subprocess
import sys

import pytest

from oomguard.worker.hygiene import load_libc

PROBE = r"""
import ctypes, ctypes.util, resource, sys
from oomguard.worker.hygiene import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 100 * 1024  # below glibc's first mmap threshold: from the heap, as small arrays are
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # 20 "attempts", each touching 8 MB of blocks and freeing them all
    blocks = [libc.malloc(size) for _ in range(80)]
    for block in blocks:
        ctypes.memset(block, 1, size)
    for block in reversed(blocks):
        libc.free(block)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(load_libc() is None, reason="needs glibc")
def test_a_block_freed_is_reused_not_faulted_in_again() -> None:
    pages = 80 * 100 * 1024 // 4096  # one attempt's blocks
    # glibc's own thresholds: the heap's free top is given back after each attempt (free()
    # trims above 128 KiB), so every attempt faults its pages in again.
    assert _faults("default") > 10 * pages
    # Fixed: faulted in once, then reused.
    assert _faults("keep") < 3 * pages
