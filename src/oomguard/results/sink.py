"""Parquet parts written on their own thread, so the scheduler loop never waits on them.

Building a part reads its rows (large results from blob files), encodes them with pyarrow
and fsyncs the file: tens of milliseconds to seconds for large results, during which the
loop would otherwise dispatch nothing and record no outcome. :class:`PartSink` runs
:func:`~oomguard.results.parquet.write_pending_parts` on a thread with its own store
connection; the loop only says which jobs have new results (:meth:`PartSink.request`).

The exactly-once rule is unchanged: rows are assigned to a part in a transaction before
the file is written, and only this thread writes parts while the scheduler runs. For the
final pass (the scheduler stopping or going idle) the loop calls :meth:`PartSink.drain`
and then writes what is left itself, so nothing is left behind when it returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

from oomguard.results.parquet import PartPolicy, write_pending_parts

log = logging.getLogger("oomguard.results")


class PartSink:
    """A thread that writes the Parquet parts of the jobs it is told about."""

    def __init__(self, store_path: str | Path, policy: PartPolicy) -> None:
        self.store_path = Path(store_path)
        self.policy = policy
        #: since when rows of (job, kind) have waited for a part
        self.waiting: dict[tuple[str, str], float] = {}
        #: the error that stopped the thread; the loop re-raises it
        self.error: BaseException | None = None
        self.written = 0
        self._cond = threading.Condition()
        self._jobs: set[str] | None = set()  # None: every job
        self._requested = False
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="oomguard-parts", daemon=True)
        self._thread.start()

    def request(self, jobs: Iterable[str] | None) -> None:
        """Ask for a pass over ``jobs`` (``None``: every job); requests merge."""
        with self._cond:
            if jobs is None or self._jobs is None:
                self._jobs = None
            else:
                self._jobs.update(jobs)
            self._requested = True
            self._cond.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every request so far has been written; False on timeout or error."""
        with self._cond:
            return (
                self._cond.wait_for(
                    lambda: (
                        self.error is not None
                        or self._thread is None
                        or not self._thread.is_alive()
                        or not (self._requested or self._busy)
                    ),
                    timeout,
                )
                and self.error is None
            )

    def stop(self) -> None:
        """Finish the pass under way, then end the thread (pending requests are dropped:
        the caller's final pass writes them)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        from oomguard.store.sqlite import SqliteStore

        store = None
        try:
            store = SqliteStore(self.store_path, create=False)
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._requested or self._stopping)
                    if self._stopping:
                        return
                    jobs, self._jobs = self._jobs, set()
                    self._requested = False
                    self._busy = True
                try:
                    self.written += write_pending_parts(
                        store, self.policy, final=False, jobs=jobs, waiting=self.waiting
                    )
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        except BaseException as err:  # surfaced by the loop, which owns the error path
            log.error("writing Parquet parts failed: %s", err)
            with self._cond:
                self.error = err
                self._cond.notify_all()
        finally:
            if store is not None:
                store.close()
