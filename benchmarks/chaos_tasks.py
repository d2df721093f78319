"""Task functions of the chaos benchmark (``benchmarks/chaos.py``) and its system test.

One dispatcher, :func:`chaos`, misbehaves as its ``kind`` parameter says; :func:`aggregate`
is the ``--aggregate`` function. Jobs name them by file path
(``/path/to/benchmarks/chaos_tasks.py:chaos``), so a fresh checkout with only oomguard
installed can run them: nothing here is imported from the tests or installed with the
package. Keep this file free of imports beyond the standard library.

Each kind and what it does to the worker:

=================  ==========================================================================
``succeed``        returns a small dict
``error``          raises ``RuntimeError``
``memory_error``   raises ``MemoryError``
``oom``            touches every page of a ``mib``-MiB bytearray (past the worker's limit)
``oom_child``      a child process of the task does that (the worker itself survives)
``timeout``        sleeps ``seconds`` (past ``--timeout``)
``segv``           kills itself with ``SIGSEGV``
``abort``          kills itself with ``SIGABRT``
``exit``           ``sys.exit(3)`` (a ``SystemExit`` exception, seen by the worker)
``os_exit``        ``os._exit(3)`` (the worker process ends without a word)
``unpicklable``    returns a value ``pickle`` refuses (a lock, or a lambda)
``surrogate_result``  returns a ``str`` holding a lone surrogate (``"\\ud800"``)
``surrogate_error``   raises an error whose message holds a lone surrogate
``large``          returns ``mib`` MiB of bytes (over the 1 MiB blob threshold)
``lose_blobs``     sleeps ``delay`` seconds, deletes the files of the store's blob directory
                   ``blobs`` (a disk losing files under a running scheduler), then returns
                   how many it deleted
=================  ==========================================================================
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
_PAGE = 4096

KINDS = (
    "succeed",
    "error",
    "memory_error",
    "oom",
    "oom_child",
    "timeout",
    "segv",
    "abort",
    "exit",
    "os_exit",
    "unpicklable",
    "surrogate_result",
    "surrogate_error",
    "large",
    "lose_blobs",
)


def _touch(mib: float) -> bytearray:
    buf = bytearray(int(mib * MIB))
    for k in range(0, len(buf), _PAGE):
        buf[k] = 1
    return buf


def chaos(kind: str, i: int, replicate: int | None = None, **kw: Any) -> Any:
    """Behave as ``kind`` says (see the module docstring); ``i`` numbers the parameter set."""
    if kind == "succeed":
        return {"value": i * 10 + (replicate or 0)}
    if kind == "error":
        raise RuntimeError(f"chaos task {i} fails on purpose")
    if kind == "memory_error":
        raise MemoryError(f"chaos task {i}: simulated allocation failure")
    if kind == "oom":
        buf = _touch(kw.get("mib", 600))
        return len(buf)
    if kind == "oom_child":
        mib = kw.get("mib", 600)
        code = f"b = bytearray({int(mib * MIB)})\nfor k in range(0, len(b), 4096): b[k] = 1\n"
        proc = subprocess.run([sys.executable, "-c", code], check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"chaos task {i}: the child exited with {proc.returncode}")
        return mib
    if kind == "timeout":
        time.sleep(kw.get("seconds", 60.0))
        return "woke up"
    if kind == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(10)  # the signal is delivered before this returns
    if kind == "abort":
        os.kill(os.getpid(), signal.SIGABRT)
        time.sleep(10)
    if kind == "exit":
        sys.exit(3)
    if kind == "os_exit":
        os._exit(3)
    if kind == "unpicklable":
        return threading.Lock() if i % 2 else (lambda: i)
    if kind == "surrogate_result":
        return f"chaos \ud800 {i}"
    if kind == "surrogate_error":
        raise ValueError(f"chaos task {i} fails with a lone surrogate: \udcff")
    if kind == "large":
        # Equal contents for the replicates of a set: they share one blob file.
        return bytes([i % 256]) * int(kw.get("mib", 2.0) * MIB)
    if kind == "lose_blobs":
        time.sleep(kw.get("delay", 0.0))
        removed = 0
        for path in Path(kw["blobs"]).glob("*"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return {"removed": removed}
    raise ValueError(f"unknown chaos kind {kind!r}")


def aggregate(params: dict[str, Any], results: list[Any]) -> dict[str, Any]:
    """The ``--aggregate`` function: how many replicates, and of what Python types."""
    if params.get("agg") == "error":
        raise RuntimeError(f"chaos aggregation of set {params.get('i')} fails on purpose")
    return {"replicates": len(results), "types": ",".join(type(r).__name__ for r in results)}
