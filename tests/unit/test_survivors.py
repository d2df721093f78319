"""HeldSurvivors: an OOM kill the worker survived waits for the kernel's line, is given it
(or, after the wait, the reason it has none), and is never held twice. The kernel-log
watch is a fake here (what it would have parsed); the real kernel is in
tests/system/test_command_oom.py."""

from __future__ import annotations

from typing import cast

from oomguard.executors.events import AttemptEnded, failed
from oomguard.kernlog.event import OomEvent
from oomguard.kernlog.watch import KernelLogWatch
from oomguard.scheduler.survivors import HeldSurvivors

CG = "/sys/fs/cgroup/memory/oomguard-1/w0"


class FakeWatch:
    def __init__(self) -> None:
        self.unavailable: str | None = None
        self.events: list[OomEvent] = []

    def find(self, pid: int | None = None, cgroup: str | None = None) -> OomEvent | None:
        for event in reversed(self.events):
            if pid is not None and event.victim_pid == pid:
                return event
        return None


def _survivor(pid: int = 4242) -> AttemptEnded:
    return failed(
        7,
        "oom_cgroup",
        "CommandFailed: command (pid 4242) was killed by SIGKILL",
        {"survivor": True, "command_pid": pid, "cgroup": CG, "cgroup_oom_kill": [0, 1]},
    )


def _event(pid: int, oom_memcg: str = "/oomguard-1/w0") -> OomEvent:
    return OomEvent(
        oom_type="memcg",
        victim_pid=pid,
        oom_memcg=oom_memcg,
        task_memcg="/oomguard-1/w0",
        lines=(f"Memory cgroup out of memory: Killed process {pid} (sim)",),
    )


def test_held_until_the_kernel_line_comes_then_given_it() -> None:
    watch = FakeWatch()
    held = HeldSurvivors(cast(KernelLogWatch, watch), wait=60.0)
    assert held.hold(_survivor())
    assert held.due() == [] and len(held) == 1  # no line yet, and still time to wait
    watch.events.append(_event(4242))
    (ended,) = held.due()
    assert ended.failure_class == "oom_cgroup"
    assert ended.evidence["kernel_lines"] == [
        "Memory cgroup out of memory: Killed process 4242 (sim)"
    ]
    kernel = ended.evidence["kernel"]
    assert isinstance(kernel, dict) and kernel["victim_pid"] == 4242
    assert not held.hold(ended)  # looked up already: recorded as it is now
    assert len(held) == 0


def test_a_parents_limit_is_oom_ancestor() -> None:
    watch = FakeWatch()
    watch.events.append(_event(4242, oom_memcg="/"))
    held = HeldSurvivors(cast(KernelLogWatch, watch), wait=60.0)
    assert held.hold(_survivor())
    (ended,) = held.due()
    assert ended.failure_class == "oom_ancestor"


def test_after_the_wait_it_goes_without_the_line_saying_why() -> None:
    held = HeldSurvivors(cast(KernelLogWatch, FakeWatch()), wait=0.0)
    assert held.hold(_survivor())
    (ended,) = held.due()
    assert ended.evidence["kernel_log"] == "no OOM report for this pid"
    assert "kernel_lines" not in ended.evidence


def test_only_survivor_ooms_with_a_readable_log_are_held() -> None:
    watch = FakeWatch()
    held = HeldSurvivors(cast(KernelLogWatch, watch), wait=60.0)
    assert not held.hold(AttemptEnded(1, True, b"x"))
    assert not held.hold(failed(2, "error", "boom", {}))
    watch.unavailable = "permission denied"
    assert not held.hold(_survivor())
    assert not HeldSurvivors(None, wait=60.0).hold(_survivor())
