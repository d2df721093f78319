"""The pool a Dask worker runs its attempts in (``executors/dask/remote/host_pool.py``), on its
own: real child processes, a real watchdog kill, a real cgroup where the machine has one."""

from __future__ import annotations

import json
import os
import pickle
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from fixtures.polling import wait_for
from oomguard.executors.dask.remote import THREAD
from oomguard.executors.dask.remote.answers import Outcome
from oomguard.executors.dask.remote.host_pool import HostPool
from oomguard.worker.calls import JsonCall

pytestmark = pytest.mark.timeout(120)

MIB = 1024 * 1024


def _item(attempt_id: int, fn: str, **params: Any) -> JsonCall:
    return JsonCall(attempt_id, fn, json.dumps(params))


@pytest.fixture
def watchdog_pool() -> Iterator[HostPool]:
    pool = HostPool(asked="watchdog", memory_limit=256 * MIB, kernel_log_wait=0.0)
    pool.start()
    try:
        yield pool
    finally:
        pool.close()


def test_a_group_runs_in_a_child_each_attempt_with_its_outcome(watchdog_pool: HostPool) -> None:
    assert watchdog_pool.mode == "watchdog" and watchdog_pool.isolated
    out = watchdog_pool.run(
        [
            _item(1, "oomguard.examples:allocate", mib=1.0),
            _item(2, "fixtures.tasks:fail_after", message="nope"),
            _item(3, "fixtures.tasks:my_pid"),
        ],
        None,
    )
    assert [o.attempt_id for o in out] == [1, 2, 3]
    assert [o.ok for o in out] == [True, False, True]
    assert out[1].failure_class == "error"
    assert out[1].message is not None and "nope" in out[1].message
    assert {o.evidence["isolation"] for o in out} == {"watchdog"}
    # Not in this process (the Dask worker's): in a child.
    assert out[2].payload is not None
    assert pickle.loads(out[2].payload) not in (os.getpid(), None)


def test_a_child_killed_at_its_limit_ends_its_attempt_and_hands_back_the_rest(
    watchdog_pool: HostPool,
) -> None:
    out = watchdog_pool.run(
        [
            _item(1, "oomguard.examples:allocate", mib=1.0),
            _item(2, "oomguard.examples:allocate", mib=512.0, hold=5.0),
            _item(3, "oomguard.examples:allocate", mib=1.0),
        ],
        64 * MIB,
    )
    assert out[0].attempt_id == 1 and out[0].ok
    assert out[1].attempt_id == 2 and out[1].failure_class == "oom_watchdog"
    evidence: dict[str, Any] = out[1].evidence
    assert evidence["rss_bytes"] > evidence["limit_bytes"] == 64 * MIB
    assert evidence["worker_memory_limit"] == 256 * MIB
    assert out[2] == Outcome.requeued(3)
    # The pool goes on with a new child.
    (again,) = watchdog_pool.run([_item(4, "oomguard.examples:allocate", mib=1.0)], None)
    assert again.ok


def test_kill_ends_only_the_child_running_the_attempt(watchdog_pool: HostPool) -> None:
    got: list[list[Outcome]] = []
    thread = threading.Thread(
        target=lambda: got.append(
            watchdog_pool.run([_item(7, "fixtures.tasks:sleep_then", x=1, seconds=60)], None)
        )
    )
    thread.start()
    assert watchdog_pool.kill(99, "timeout", {}) == "absent"
    wait_for(lambda: watchdog_pool.kill(7, "timeout", {"timeout_s": 1.0}) == "killed")
    thread.join(timeout=60)
    ((outcome,),) = got
    assert outcome.failure_class == "timeout"
    assert outcome.evidence["killed_by_oomguard"] == "timeout"


def test_thread_mode_runs_nothing_in_children() -> None:
    pool = HostPool(asked=THREAD)
    pool.start()
    assert pool.mode == THREAD and not pool.isolated
    assert pool.kill(1, "timeout", {}) == THREAD
    assert pool.describe()["mode"] == THREAD
    pool.close()


def test_cgroup_mode_makes_and_removes_a_cgroup_per_child(require_cgroup: None) -> None:
    pool = HostPool(
        asked="cgroup", memory_limit=256 * MIB, kernel_log="/dev/kmsg", kernel_log_wait=2.0
    )
    pool.start()
    try:
        assert pool.mode in ("cgroup-v1", "cgroup-v2")
        assert pool.pool is not None and pool.pool.cgroups is not None
        run_dir = pool.pool.cgroups.run_dir
        out = pool.run([_item(1, "oomguard.examples:allocate", mib=512.0)], 64 * MIB)
        assert out[0].failure_class == "oom_cgroup", out
        ev: dict[str, Any] = out[0].evidence
        assert ev["cgroup"].startswith(str(run_dir))
        assert ev["cgroup_after"]["oom_kill"] == ev["cgroup_before"]["oom_kill"] + 1
        if ev.get("kernel_log") is None:  # this host's kernel log was readable
            assert any(f"Killed process {ev['pid']} " in line for line in ev["kernel_lines"])
        assert run_dir.exists()
    finally:
        pool.close()
    assert not run_dir.exists()


def test_no_child_to_be_had_is_said_and_nothing_runs(watchdog_pool: HostPool) -> None:
    # run_calls then runs the group in the Dask worker's thread (nothing ran in a child).
    import errno

    from oomguard.executors.dask.remote.host_pool import ChildUnavailable

    assert watchdog_pool.pool is not None

    def refuse() -> Any:
        raise OSError(errno.EMFILE, "Too many open files")

    # The idle child is busy elsewhere: a new one is needed, and none can be started.
    busy = watchdog_pool._acquire(None)
    watchdog_pool.pool.spawn = refuse  # type: ignore[method-assign]
    with pytest.raises(ChildUnavailable, match="Too many open files"):
        watchdog_pool.run([_item(1, "oomguard.examples:allocate", mib=1.0)], None)
    watchdog_pool._release(busy)
