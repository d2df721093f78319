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
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from oomguard.results.parquet import PartPolicy, write_pending_parts

if TYPE_CHECKING:
    from oomguard.store.protocol import Store

log = logging.getLogger("oomguard.results")


#: a job whose part could not be written is tried again after this many seconds
RETRY_AFTER = 5.0


class PartSink:
    """A thread that writes the Parquet parts of the jobs it is told about.

    It never stops on a part it cannot write: the job's error is kept in :attr:`errors`
    (where ``Job.wait`` finds it) and the job is tried again after :data:`RETRY_AFTER`.
    """

    def __init__(self, store_path: str | Path, policy: PartPolicy) -> None:
        self.store_path = os.fspath(store_path)
        self.policy = policy
        #: since when rows of (job, kind) have waited for a part
        self.waiting: dict[tuple[str, str], float] = {}
        #: job id → why its last part could not be written (cleared once one is)
        self.errors: dict[str, str] = {}
        #: an error of a whole pass (the store could not be read), logged and retried
        self.error: BaseException | None = None
        self.written = 0
        self._cond = threading.Condition()
        self._jobs: set[str] | None = set()  # None: every job
        self._requested = False
        self._busy = False
        self._stopping = False
        self._retry_at: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="oomguard-parts", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def has_waiting(self) -> bool:
        """Rows wait on time (``max_delay``) or a failed job waits for its retry."""
        return bool(self.waiting or self._retry_at)

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
        """Wait until every request so far has been written; False on timeout, or when
        the thread is gone."""
        with self._cond:
            return (
                self._cond.wait_for(
                    lambda: not self.alive or not (self._requested or self._busy), timeout
                )
                and self.alive
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
        from oomguard.store.factory import open_store

        try:
            store = open_store(self.store_path, create=False)
        except BaseException as err:
            log.error("the Parquet part writer cannot open the store: %s", err)
            self.error = err
            return
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._requested or self._stopping)
                    if self._stopping:
                        return
                    jobs, self._jobs = self._jobs, set()
                    self._requested = False
                    self._busy = True
                try:
                    self._pass(store, jobs)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        finally:
            store.close()

    def _pass(self, store: Store, jobs: set[str] | None) -> None:
        now = time.monotonic()
        if jobs is not None:
            # Rows waiting on time are looked at again without a new request.
            jobs = jobs | {job for job, _ in self.waiting}
            due = {job for job, at in self._retry_at.items() if at <= now}
            jobs = (jobs - set(self._retry_at)) | due
        try:
            self.written += write_pending_parts(
                store,
                self.policy,
                final=False,
                jobs=jobs,
                waiting=self.waiting,
                errors=self.errors,
            )
            self.error = None
        except Exception as err:  # the store itself failed: say so, try again later
            log.error("writing Parquet parts failed: %s", err)
            self.error = err
        for job in list(self._retry_at):
            if job not in self.errors:
                del self._retry_at[job]
        for job in self.errors:
            if jobs is None or job in jobs:
                self._retry_at[job] = now + RETRY_AFTER
