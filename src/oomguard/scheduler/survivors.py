"""OOM kills a worker survived: the kernel's evidence for them.

A process a task started (a command task's program, a task's subprocess) can be killed
by the OOM killer in the worker's cgroup while the worker lives on: the worker reports
the attempt ``oom_cgroup`` itself (its cgroup's ``oom_kill`` counter moved, see
``worker/child.py``), with the program's pid. As for a worker's death, the ending waits
here up to ``kernel_log_wait`` for the kernel's ``Killed process`` line, which is added to
its evidence (docs/ARCHITECTURE.md, "Command tasks").
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from oomguard.diagnosis.classify import ancestor_limit
from oomguard.executors.events import AttemptEnded
from oomguard.jobs.model import FailureClass

if TYPE_CHECKING:
    from oomguard.kernlog.watch import KernelLogWatch


class HeldSurvivors:
    """Endings of attempts whose worker survived an OOM kill, held for the kernel's line."""

    def __init__(self, kmsg: KernelLogWatch | None, wait: float) -> None:
        self.kmsg = kmsg
        self.wait = wait
        self._held: list[tuple[AttemptEnded, float]] = []

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, event: AttemptEnded) -> bool:
        """Whether ``event`` waits for the kernel's line (it comes back from :meth:`due`)."""
        evidence = event.evidence
        if event.ok or not evidence.get("survivor"):
            return False
        if "kernel_lines" in evidence or "kernel_log" in evidence:
            return False  # looked for already
        if self.kmsg is None or self.kmsg.unavailable is not None:
            return False
        self._held.append((event, time.monotonic() + self.wait))
        return True

    def due(self) -> list[AttemptEnded]:
        """The held endings whose kernel line came (or that waited long enough), with it."""
        if not self._held or self.kmsg is None:
            return []
        now = time.monotonic()
        out, keep = [], []
        for event, deadline in self._held:
            evidence = dict(event.evidence)
            pid = evidence.get("command_pid")
            cgroup = evidence.get("cgroup")
            found = self.kmsg.find(
                pid=pid if isinstance(pid, int) else None,
                cgroup=cgroup if isinstance(cgroup, str) else None,
            )
            if found is None and now < deadline:
                keep.append((event, deadline))
                continue
            fc = event.failure_class
            if found is not None:
                evidence["kernel"] = found.to_json()
                evidence["kernel_lines"] = list(found.lines)
                if ancestor_limit(found):  # v1 counts the kill here whoever's limit it was
                    fc = FailureClass.OOM_ANCESTOR
            else:
                evidence["kernel_log"] = self.kmsg.unavailable or "no OOM report for this pid"
            out.append(dataclasses.replace(event, failure_class=fc, evidence=evidence))
        self._held = keep
        return out


__all__ = ["HeldSurvivors"]
