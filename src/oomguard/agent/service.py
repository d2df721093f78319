"""The agent's loop: read kills, name them, report them, move the cursor, keep the
policy; with its configuration (:class:`AgentConfig`, built by ``oomguard agent``).

One thread reads the log and delivers each report before it writes the cursor, so what
a stop interrupts is delivered by the next start, and nothing twice. ``/metrics`` and
``/healthz`` are served from another thread. A reader that fails (the device gone, the
journal reader exited) is reopened after a pause; the failure shows in ``/healthz`` and
the reader error counter, and the cursor keeps the reopened reader from repeating.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from oomguard.agent.attribution import NoPodNames, PodNames
from oomguard.agent.channels import Channel
from oomguard.agent.cursor import Cursor, boot_id, load_cursor, save_cursor
from oomguard.agent.metrics import AgentMetrics, Health, HealthServer
from oomguard.agent.policy import Reconciler
from oomguard.agent.ratelimit import RateLimiter
from oomguard.agent.reader import KillReader, LogLine, LogSource, SeenKill, open_source
from oomguard.agent.report import build_report
from oomguard.errors import KernelLogUnavailable

__all__ = ["Agent", "AgentConfig"]

log = logging.getLogger("oomguard.agent")

#: seconds between tries to reopen a kernel log that failed
REOPEN_S = 2.0
#: how long one wait for the log lasts while a report may still be completing
TICK_S = 0.1
#: how long one wait lasts when the log is idle (the device wakes the loop when a record
#: comes; a file or pipe standing in for it is polled at this pace)
IDLE_S = 1.0


@dataclass(frozen=True)
class AgentConfig:
    """What ``oomguard agent`` was asked to do."""

    kernel_log: str = "auto"
    state: Path | None = None
    #: seconds of the log a start without a cursor reports
    lookback_s: float = 300.0
    listen: str | None = None
    cgroup_root: Path = Path("/sys/fs/cgroup")
    rate_limit_s: float = 60.0
    node: str = ""
    policy_interval_s: float = 1.0


@dataclass
class Agent:
    """One running agent (see the module docstring)."""

    config: AgentConfig
    channels: Sequence[Channel] = ()
    names: PodNames = field(default_factory=NoPodNames)
    policy: Reconciler | None = None
    open_log: Callable[[str], LogSource] = open_source
    metrics: AgentMetrics = field(default_factory=AgentMetrics)

    def __post_init__(self) -> None:
        self.health = Health(source=self.config.kernel_log, started_at=time.time())
        self.stopping = threading.Event()
        self.limiter = RateLimiter(self.config.rate_limit_s)
        self.boot = boot_id()
        self.cursor: Cursor | None = None
        if self.config.state is not None:
            found = load_cursor(self.config.state)
            if found is not None and found.boot_id != self.boot:
                log.warning("--state %s is from another boot: starting afresh", self.config.state)
                found = None
            self.cursor = found
        #: without a cursor, kills before this time since boot are not reported
        self.floor = None if self.cursor else time.monotonic() - self.config.lookback_s
        self.server: HealthServer | None = None
        self._lost = 0

    def run(self) -> None:
        """Read and report until :meth:`stop`. Raises
        :class:`~oomguard.errors.KernelLogUnavailable` when no log can be opened at start."""
        reader = KillReader(self.open_log(self.config.kernel_log))
        self.health.source = reader.source.name
        if self.config.listen:
            self.server = HealthServer(self.config.listen, self.metrics, lambda: self.health)
            self.server.start()
            log.info("serving /metrics and /healthz on %s", self.server.address)
        if self.policy is not None:
            self.policy.reconcile()
        next_policy = time.monotonic() + self.config.policy_interval_s
        try:
            while not self.stopping.is_set():
                wait = TICK_S if reader.settling else IDLE_S
                if self.policy is not None:
                    wait = max(0.0, min(wait, next_policy - time.monotonic()))
                reader = self._step(reader, wait)
                if self.policy is not None and time.monotonic() >= next_policy:
                    self.policy.reconcile()
                    next_policy = time.monotonic() + self.config.policy_interval_s
        finally:
            reader.close()
            if self.server is not None:
                self.server.close()
            for channel in self.channels:
                channel.close()

    def _step(self, reader: KillReader, wait: float) -> KillReader:
        reader.wait(wait)
        lines_before = reader.lines_read
        errors_before = reader.parser.errors
        try:
            kills = reader.poll()
        except KernelLogUnavailable as err:
            return self._reopen(reader, str(err))
        now = time.time()
        self.health.last_read_at = now
        self.metrics.last_read.set(now)
        if reader.lines_read > lines_before:
            self.health.last_line_at = now
            self.metrics.records.inc(reader.lines_read - lines_before)
        self.health.lines_read = reader.lines_read
        if reader.source.lost > self._lost:
            self.metrics.records_lost.inc(reader.source.lost - self._lost)
        self._lost = reader.source.lost
        if reader.parser.errors > errors_before:
            self._error(f"parser: {reader.parser.last_error}", reader.parser.errors - errors_before)
        for kill in kills:
            self._handle(kill)
        return reader

    def _error(self, reason: str, count: int = 1) -> None:
        self.health.reader_errors += count
        self.health.last_error = reason
        self.metrics.reader_errors.inc(count)

    def _reopen(self, reader: KillReader, reason: str) -> KillReader:
        log.warning("kernel log reader failed: %s; reopening", reason)
        self._error(reason)
        self.health.failed = True
        reader.close()
        while not self.stopping.wait(REOPEN_S):
            try:
                fresh = KillReader(self.open_log(self.config.kernel_log))
            except KernelLogUnavailable as err:
                self._error(str(err))
                continue
            self.health.failed = False
            self.health.source = fresh.source.name
            self._lost = 0
            return fresh
        return KillReader(_Closed())

    def _handle(self, kill: SeenKill) -> None:
        if self.cursor is not None and self.cursor.is_past(kill.seq, kill.stamp):
            return
        early = self.floor is not None and kill.stamp is not None and kill.stamp < self.floor
        if self.cursor is None and early:
            return  # before --lookback on a first start
        report = build_report(
            kill, self.names, cgroup_root=self.config.cgroup_root, node=self.config.node
        )
        self.health.kills_seen += 1
        self.metrics.count_kill(report)
        decision = self.limiter.decide(report.workload.key)
        if decision.send:
            for channel in self.channels:
                ok = channel.send(report, decision.suppressed)
                self.metrics.notifications.labels(channel.name, "sent" if ok else "failed").inc()
        else:
            self.metrics.suppressed.inc()
        log.info("%s", report.summary())
        self.cursor = Cursor(self.boot, kill.seq, kill.stamp)
        if self.config.state is not None:
            save_cursor(self.config.state, self.cursor)

    def stop(self) -> None:
        self.stopping.set()


class _Closed:
    """The source left when the agent stops while its log is unavailable."""

    name = "closed"
    lost = 0

    def fileno(self) -> int | None:
        return None

    def read(self) -> list[LogLine]:
        return []

    def close(self) -> None:
        pass
