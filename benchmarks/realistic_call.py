"""What the process pool of ``benchmarks/realistic_sweep.py`` submits: the task, imported
in the worker at its first call, so the pool's workers (forked from a parent that never
imported numpy, pandas or scipy) pay for the import as oomguard's do."""

from __future__ import annotations

from typing import Any


def simulate(**params: Any) -> dict[str, Any]:
    from realistic_tasks import simulate as run

    return run(**params)
