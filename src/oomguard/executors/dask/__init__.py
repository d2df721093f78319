"""The Dask executor: attempts run on an existing Dask distributed cluster.

Split by where the code runs. This package is the client side, in oomguard's scheduler
process: :mod:`.executor` (the :class:`~.executor.DaskExecutor`), :mod:`.backlog` (groups
waiting to be sent), :mod:`.flights` (what was sent, and its answers), :mod:`.deaths` (why
a Dask worker died), :mod:`.recycling` (restarting workers), :mod:`.held` (where held
results are), :mod:`.cluster` (the questions asked of the cluster). :mod:`.remote` is what
the Dask workers, their nannies and the Dask scheduler import; it imports nothing of the
client side. See docs/ARCHITECTURE.md ("Dask").

``distributed`` is an optional extra: importing this package without it raises
:class:`~oomguard.errors.ConfigError` naming the extra to install.
"""

from __future__ import annotations

import typing

from oomguard import errors

try:
    import distributed  # noqa: F401  (checked here once, for every module below)
except ImportError as err:
    raise errors.ConfigError(
        "the dask executor needs dask[distributed]: pip install 'oomguard[dask]'"
    ) from err

if typing.TYPE_CHECKING:
    from oomguard.executors.dask.executor import DaskExecutor


def __getattr__(name: str) -> object:
    # ``oomguard.executors.dask.DaskExecutor`` is loaded on first use, not with the
    # package: the Dask workers import ``remote`` below it, and never the client side.
    if name == "DaskExecutor":
        from oomguard.executors.dask.executor import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DaskExecutor"]
