"""The kernel-log reader thread: asleep in ``select`` on the real device until a record
arrives or it is stopped (no timer wakes it), polling a plain file that stands in for the
device, and finding the OOM kills it read."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from oomguard.kernlog.watch import KernelLogWatch

REPORT = Path(__file__).resolve().parent.parent / "fixtures" / "oom_reports"


def _wakeups(native_id: int) -> int:
    """How many times the thread went to sleep and woke (its voluntary context switches)."""
    for line in Path(f"/proc/self/task/{native_id}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc/self/task/*/status")


@pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="/dev/kmsg is not readable")
def test_on_the_device_it_sleeps_until_stopped_and_stops_at_once() -> None:
    watch = KernelLogWatch("/dev/kmsg")
    watch.start()
    assert watch.unavailable is None
    thread = watch._thread
    assert thread is not None and thread.native_id is not None
    time.sleep(0.2)
    before = _wakeups(thread.native_id)
    time.sleep(1.0)
    # Asleep in select: not woken by a timer (a 50 ms one would be 20 times; a record the
    # kernel happens to log meanwhile wakes it once).
    assert _wakeups(thread.native_id) - before <= 3
    stopper = threading.Thread(target=watch.stop)
    stopper.start()
    stopper.join(timeout=30)
    assert not stopper.is_alive(), "stop() never woke the watch thread from its select"
    assert not thread.is_alive()


def test_a_plain_file_is_polled_and_its_kills_are_found(tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    log.write_text("")
    watch = KernelLogWatch(str(log))
    watch.start()
    try:
        assert watch.unavailable is None
        with log.open("ab") as fh:
            fh.write((REPORT / "local_memcg_v1_kmsg_6.18.log").read_bytes())
        deadline = time.monotonic() + 5
        found = None
        while found is None and time.monotonic() < deadline:
            found = watch.find(pid=3128)
            time.sleep(0.02)
        assert found is not None and found.victim_comm == "python"
    finally:
        watch.stop()
    assert watch._thread is not None and not watch._thread.is_alive()
