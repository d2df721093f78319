"""Run one chaos plan as the real ``oomguard run`` and check what it did and left.

:func:`run_plan` runs the CLI in a fresh directory, in a new session, under a hard bound:
past it the run is a *hang*: every thread's stack is dumped (``faulthandler``, SIGABRT),
then its process group is killed, then the processes it started (by pid and start time).
:func:`check_run` then checks, against the store and the Parquet files:

* ``hang``: did not exit within the bound.
* ``exit``: the exit code is 0 when every task succeeded and 1 (``TASKS_FAILED``) when some
  failed; no Python traceback on stderr; no task left unfinished and no attempt left
  ``running`` after the command returned; no temporary part file left.
* ``rows_lost`` / ``rows_duplicated`` / ``rows_extra`` (with ``--out``): each succeeded
  task (and aggregation) has exactly one row in ``OUT/tasks`` (``OUT/aggregates``), and no
  other task has one. Rows of ``large`` results in a run whose blob files were deleted
  (``lose_blobs``) are ``rows_excused``: counted, not a failure.
* ``unclassified``: a failed task with neither its own class nor its last attempt's.
* ``mismatch``: a task whose final state or classes differ from what its kind must give
  (:data:`chaos_plan.EXPECTED`).
* ``leftover_cgroups`` / ``leftover_processes``: memory cgroups the run created below this
  process's cgroup, or processes it started (or that ran its attempts), still there after
  it exited.

:func:`clean_up` removes whatever a run left, whether or not it was counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos_plan import EXPECTED, Plan

#: ``oomguard.cli.exit_codes.ExitCode.TASKS_FAILED`` (kept here: a check must not borrow
#: the code under test's own idea of what it should return)
EXIT_TASKS_FAILED = 1


# -- running ---------------------------------------------------------------------------


def own_memory_cgroup() -> Path | None:
    """This process's memory cgroup directory (v1 ``memory`` line, else the v2 line)."""
    v1 = v2 = None
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as fh:
        for line in fh:
            hid, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                v1 = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            elif hid == "0" and not controllers:
                v2 = Path("/sys/fs/cgroup") / path.lstrip("/")
    for candidate in (v1, v2):
        if candidate is not None and candidate.is_dir():
            return candidate
    return None


def cgroup_dirs(root: Path | None) -> set[str]:
    """Every directory below ``root``, relative to it."""
    if root is None:
        return set()
    found = set()
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


class Descendants:
    """Samples the processes below ``pid`` every ``interval`` s: ``{pid: start_time}``."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="descendants", daemon=True)
        self._interval = interval
        self._thread.start()

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                for child in self.root.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        self.seen.setdefault(child.pid, child.create_time())
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def alive(pid: int, start_time: float | None) -> bool:
    """Whether the process ``(pid, start_time)`` still runs (zombies do not count)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if start_time is not None and abs(proc.create_time() - start_time) > 0.05:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Ran:
    """What running a plan produced, before any check."""

    workdir: Path
    rc: int | None
    seconds: float
    hung: bool
    stdout: str
    stderr: str
    pid: int
    descendants: dict[int, float]
    cgroups_before: set[str]
    cgroups_after: set[str]
    own_cgroup: str | None
    started_at: float
    store_at_hang: dict[str, Any] | None = None


def run_plan(plan: Plan, workdir: Path, timeout: float) -> Ran:
    """Run ``plan`` as the real CLI in ``workdir``, killed (as a hang) after ``timeout`` s."""
    plan.write_params(workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOMGUARD_")}
    own = own_memory_cgroup()
    before = cgroup_dirs(own)
    started_at = time.time()
    started = time.monotonic()
    with open(workdir / "stdout", "wb") as out, open(workdir / "stderr", "wb") as err:
        proc = subprocess.Popen(
            plan.argv(workdir), cwd=workdir, env=env, stdout=out, stderr=err,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    sampler = Descendants(proc.pid)
    hung = False
    store_at_hang = None
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = True
        store_at_hang = summarize_store(workdir / "s.db")
        # faulthandler prints every thread's stack on SIGABRT: where it was stuck.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGABRT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    seconds = time.monotonic() - started
    sampler.stop()
    after = cgroup_dirs(own)
    ran = Ran(
        workdir, None if hung else proc.returncode, seconds, hung,
        (workdir / "stdout").read_text(errors="replace"),
        (workdir / "stderr").read_text(errors="replace"),
        proc.pid, dict(sampler.seen), before, after, str(own) if own else None, started_at,
        store_at_hang,
    )
    return ran


_FRAME_RE = re.compile(r'^\s+File "(?P<path>[^"]+)", line (?P<line>\d+) in (?P<fn>\S+)')


def where_stuck(stderr: str) -> list[str]:
    """From faulthandler's dump: each thread's innermost frame in oomguard's code."""
    found = []
    name = None
    for line in stderr.splitlines():
        if line.startswith(("Thread 0x", "Current thread 0x")):
            name = "main" if line.startswith("Current") else "thread"
            continue
        m = _FRAME_RE.match(line)
        if name is not None and m and f"{os.sep}oomguard{os.sep}" in m["path"]:
            found.append(f"{name} {Path(m['path']).parent.name}/{Path(m['path']).name}"
                         f":{m['line']} {m['fn']}")
            name = None
    return found


def clean_up(ran: Ran) -> None:
    """Kill what the run left (its processes, by pid and start time) and remove its cgroups."""
    for pid, start in ran.descendants.items():
        if alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if ran.own_cgroup is None:
        return
    own = Path(ran.own_cgroup)
    ours = sorted(run_cgroups(ran, cgroup_dirs(own)), key=lambda d: -d.count(os.sep))
    deadline = time.monotonic() + 5
    for rel in ours:
        while True:
            try:
                os.rmdir(own / rel)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)


_RUN_DIR_RE = re.compile(r"^oomguard-(?:probe-)?(?P<pid>[0-9]+)-")


def run_cgroups(ran: Ran, dirs: set[str]) -> set[str]:
    """The new cgroup directories that belong to the run (named after its pid)."""
    mine = f"oomguard-{ran.pid}-"
    return {d for d in dirs - ran.cgroups_before if d.split(os.sep)[0].startswith(mine)}


def new_cgroups(ran: Ran) -> set[str]:
    """oomguard's cgroup directories that appeared during the run and are the run's own
    (``oomguard-<pid>-...`` of its pid). Others are not the run's: another oomguard
    process's, or another program's sharing this cgroup (a test beside it makes its own)."""
    found = set()
    for d in ran.cgroups_after - ran.cgroups_before:
        m = _RUN_DIR_RE.match(d.split(os.sep)[0])
        if m is not None and int(m["pid"]) == ran.pid:
            found.add(d)
    return found


# -- checking ---------------------------------------------------------------------------


def _db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=10)
    db.row_factory = sqlite3.Row
    return db


def summarize_store(path: Path) -> dict[str, Any] | None:
    """Tasks by state, and the unfinished ones by kind (for a hang's report)."""
    if not path.exists():
        return None
    try:
        with contextlib.closing(_db(path)) as db:
            states = Counter(r[0] for r in db.execute("SELECT state FROM tasks"))
            open_ = Counter(
                f"{r['kind']}:{json.loads(r['params'] or '{}').get('kind')}"
                for r in db.execute(
                    "SELECT kind, params FROM tasks WHERE state NOT IN "
                    "('succeeded', 'failed', 'cancelled')"
                )
            )
            unwritten = db.execute("SELECT COUNT(*) FROM results WHERE part IS NULL").fetchone()[0]
    except sqlite3.Error as err:
        return {"error": str(err)}
    return {"states": dict(states), "unfinished": dict(open_), "results_not_in_parts": unwritten}


def expected_for(plan: Plan, task: sqlite3.Row, params: dict[str, Any]
                 ) -> tuple[str, set[str], set[str]] | None:
    """(state, classes of its failed attempts, final classes) the task must end with, or
    None where it may end either way."""
    kind = params.get("kind")
    if kind not in EXPECTED:
        return None
    if kind == "large" and "lose_blobs" in plan.kinds:
        return None  # its blob may be gone before its row or its aggregation reads it
    state, attempt_classes, final_classes = EXPECTED[kind]
    if task["kind"] == "aggregate":
        if state != "succeeded":
            return "failed", set(), {"upstream_failed"}
        if params.get("agg") == "error":
            return "failed", {"error"}, {"error"}
        return "succeeded", set(), set()
    attempts = {plan.oom_class if c == "{oom}" else c for c in attempt_classes}
    return state, attempts, set(final_classes)


@dataclass
class Findings:
    """What a run broke: each list names the tasks (or things) concerned."""

    hang: bool = False
    #: where a hung run's threads were (its main thread first)
    stuck_at: list[str] = field(default_factory=list)
    exit: list[str] = field(default_factory=list)
    rows_lost: list[int] = field(default_factory=list)
    rows_duplicated: list[int] = field(default_factory=list)
    rows_extra: list[int] = field(default_factory=list)
    rows_excused: list[int] = field(default_factory=list)
    unclassified: list[int] = field(default_factory=list)
    mismatch: list[str] = field(default_factory=list)
    leftover_cgroups: list[str] = field(default_factory=list)
    leftover_processes: list[str] = field(default_factory=list)
    final_classes: dict[str, int] = field(default_factory=dict)
    attempt_classes: dict[str, int] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """One line per kind of problem (empty: the run kept every promise)."""
        out = []
        if self.hang:
            main = [w for w in self.stuck_at if w.startswith("main ")]
            out.append(f"hang ({main[0]})" if main else "hang")
        for name in ("exit", "rows_lost", "rows_duplicated", "rows_extra", "unclassified",
                     "mismatch", "leftover_cgroups", "leftover_processes"):
            values = getattr(self, name)
            if values:
                out.append(f"{name}: {', '.join(map(str, values[:6]))}"
                           + (f" (+{len(values) - 6})" if len(values) > 6 else ""))
        return out


def _parquet_ids(directory: Path) -> tuple[Counter[int], list[str]]:
    import pyarrow.parquet as pq

    ids: Counter[int] = Counter()
    temporary: list[str] = []
    if not directory.is_dir():
        return ids, temporary
    for path in sorted(directory.iterdir()):
        if path.name.endswith(".parquet") and not path.name.startswith("."):
            table = pq.read_table(path, columns=["task_id"])
            ids.update(int(v) for v in table.column("task_id").to_pylist())
        else:
            temporary.append(path.name)
    return ids, temporary


def check_run(plan: Plan, ran: Ran) -> Findings:
    """Every check of the module docstring, on a finished (or killed) run."""
    f = Findings(hang=ran.hung)
    if ran.hung:
        stuck = where_stuck(ran.stderr)
        f.stuck_at = sorted(stuck, key=lambda w: not w.startswith("main "))
    store = ran.workdir / "s.db"
    if not store.exists():
        f.exit.append(f"no store (exit {ran.rc}): {ran.stderr.strip()[-300:]}")
        return f
    with contextlib.closing(_db(store)) as db:
        tasks = db.execute(
            "SELECT id, grp, kind, replicate, params, state, failure_class, error FROM tasks"
        ).fetchall()
        attempts: dict[int, list[sqlite3.Row]] = {}
        for a in db.execute(
            "SELECT id, task_id, n, state, failure_class, pid, evidence FROM attempts ORDER BY id"
        ):
            attempts.setdefault(a["task_id"], []).append(a)
    states = Counter(t["state"] for t in tasks)
    f.states = dict(states)
    unfinished: Counter[str] = Counter()
    running: list[int] = []
    for t in tasks:
        params = json.loads(t["params"]) if t["params"] else {}
        tries = attempts.get(t["id"], [])
        for a in tries:
            if a["failure_class"]:
                f.attempt_classes[a["failure_class"]] = (
                    f.attempt_classes.get(a["failure_class"], 0) + 1
                )
        if t["state"] == "failed":
            cls = t["failure_class"] or (tries[-1]["failure_class"] if tries else None)
            f.final_classes[str(cls)] = f.final_classes.get(str(cls), 0) + 1
            if not cls:
                f.unclassified.append(t["id"])
        if ran.hung:
            continue
        if t["state"] not in ("succeeded", "failed", "cancelled"):
            unfinished[t["state"]] += 1
        running.extend(a["id"] for a in tries if a["state"] == "running")
        want = expected_for(plan, t, params)
        if want is None or t["state"] not in ("succeeded", "failed"):
            continue
        state, attempt_ok, final_ok = want
        got_attempts = {a["failure_class"] for a in tries if a["failure_class"]}
        label = f"{t['kind']} {t['id']} {params.get('kind')}"
        if t["state"] != state:
            f.mismatch.append(f"{label}: {t['state']} ({t['failure_class']}), expected {state}")
        elif state == "failed" and t["failure_class"] not in final_ok:
            f.mismatch.append(f"{label}: final class {t['failure_class']}, expected "
                              f"{'|'.join(sorted(final_ok))}")
        if not got_attempts <= attempt_ok:
            f.mismatch.append(f"{label}: attempt classes {sorted(got_attempts)}, expected "
                              f"{sorted(attempt_ok) or 'none'}")
    if ran.hung:
        return f
    _check_exit(ran, states, f)
    if unfinished:
        f.exit.append(f"{sum(unfinished.values())} task(s) left unfinished ("
                      + ", ".join(f"{n} {s}" for s, n in sorted(unfinished.items())) + ")")
    if running:
        f.exit.append(f"{len(running)} attempt(s) left running")
    if plan.out:
        _check_rows(plan, ran, tasks, attempts, f)
    _check_leftovers(ran, attempts, f)
    return f


def _check_exit(ran: Ran, states: Counter[str], f: Findings) -> None:
    want = EXIT_TASKS_FAILED if states["failed"] else 0
    if ran.rc != want:
        last = ran.stderr.strip().splitlines()[-1:] or [""]
        f.exit.append(f"exit {ran.rc}, expected {want} ({last[0][:160]})")
    if "Traceback (most recent call last)" in ran.stderr:
        lines = ran.stderr.strip().splitlines()
        f.exit.append(f"traceback: {lines[-1][:160] if lines else ''}")


def _check_rows(plan: Plan, ran: Ran, tasks: list[sqlite3.Row],
                attempts: dict[int, list[sqlite3.Row]], f: Findings) -> None:
    out = ran.workdir / "out"
    for kind, sub in (("task", "tasks"), ("aggregate", "aggregates")):
        ids, temporary = _parquet_ids(out / sub)
        f.exit.extend(f"temporary file left: {sub}/{name}" for name in temporary)
        succeeded = {t["id"] for t in tasks if t["kind"] == kind and t["state"] == "succeeded"}
        excused = set()
        if "lose_blobs" in plan.kinds:
            excused = {t["id"] for t in tasks if t["kind"] == kind
                       and json.loads(t["params"] or "{}").get("kind") == "large"}
        for tid in sorted(succeeded - set(ids)):
            (f.rows_excused if tid in excused else f.rows_lost).append(tid)
        f.rows_duplicated.extend(sorted(t for t, n in ids.items() if n > 1))
        f.rows_extra.extend(sorted(set(ids) - succeeded))


def _check_leftovers(ran: Ran, attempts: dict[int, list[sqlite3.Row]], f: Findings) -> None:
    import psutil

    f.leftover_cgroups.extend(sorted(new_cgroups(ran)))
    pids: dict[int, float | None] = dict(ran.descendants)
    for tries in attempts.values():
        for a in tries:
            if a["pid"] and a["pid"] not in pids:
                pids[a["pid"]] = None  # never sampled: judged by its start time below
    deadline = time.monotonic() + 3  # a process killed at the very end may take a moment
    left = {p: s for p, s in pids.items() if alive(p, s)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p: s for p, s in left.items() if alive(p, s)}
    for pid, start in sorted(left.items()):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if start is None and proc.create_time() < ran.started_at - 1:
                continue  # an older process that has the pid of one of the run's attempts
            f.leftover_processes.append(f"{pid} {' '.join(proc.cmdline())[:80]}")
