"""Shared helpers for the benchmark scripts: machine description, RSS sampling, tables, JSON.

Every script prints a human table, then one final line ``JSON: {...}`` with the same numbers,
so a run can be read by eye or parsed (``tail -1 | sed 's/^JSON: //'``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psutil

MIB = 1024 * 1024


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    from importlib import metadata

    from oomguard.procfs import machine_memory_bytes

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_bytes": machine_memory_bytes(),  # what oomguard's budget starts from
    }
    for name in ("oomguard", "loky", "dask", "distributed", "ray"):
        try:
            info[f"{name}_version"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[f"{name}_version"] = None
    return info


class RssSampler:
    """Sample a process's RSS every ``interval`` seconds in a thread; keep the peak."""

    def __init__(self, pid: int | None = None, interval: float = 0.1) -> None:
        self.proc = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                value = self.rss()
            except psutil.Error:
                return
            self.samples.append((time.monotonic(), value))
            self.peak = max(self.peak, value)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.Error):
            self.peak = max(self.peak, self.rss())


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if k and i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(benchmark: str, args: Any, results: Any, notes: Sequence[str] = ()) -> None:
    """Print the notes and the final JSON line."""
    for note in notes:
        print(f"note: {note}")
    payload = {
        "benchmark": benchmark,
        "args": vars(args) if hasattr(args, "__dict__") else args,
        "machine": machine(),
        "results": results,
        "notes": list(notes),
    }
    sys.stdout.flush()
    print("JSON: " + json.dumps(payload, default=str))


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def quiet_dask_logs() -> None:
    import logging

    for name in ("distributed", "distributed.nanny", "distributed.worker",
                 "distributed.scheduler", "distributed.core", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
