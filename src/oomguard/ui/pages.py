"""What each dashboard page shows, read from the store (the templates only lay it out).

Every function takes a store and returns what its template lays out (the store's records,
a few rows of its own, the charts as SVG markup); none writes. See docs/ARCHITECTURE.md
("The dashboard").
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from oomguard.jobs.jsonvalue import JSON
from oomguard.store.protocol import Store
from oomguard.store.records import (
    AttemptRecord,
    FailedTask,
    JobProgress,
    JobTimes,
    KillPoint,
    ThroughputPoint,
)
from oomguard.store.samples import Sample
from oomguard.ui.charts import PALETTE, Frame, Mark, Series, format_duration, line_chart
from oomguard.units import format_size

#: jobs on the jobs page (the newest)
JOBS_SHOWN = 100
#: failed tasks listed on a job page
FAILED_SHOWN = 50
#: workers drawn one line each (more are summed into one line)
WORKERS_DRAWN = 12
LIVE_STATES = ("running", "waiting")

#: what a page's template is given (its names and values)
Context = dict[str, object]


@dataclass(frozen=True)
class Timing:
    """When a job was made and started, how long it ran, and its percent finished."""

    created_at: float
    started_at: float | None
    duration: float | None
    percent: float


@dataclass(frozen=True)
class JobRow:
    """A job on the jobs page: its status and its timing."""

    status: JobProgress
    timing: Timing


@dataclass(frozen=True)
class AttemptEvidence:
    """An attempt on the task page, its evidence taken apart for the template."""

    attempt: AttemptRecord
    kernel_lines: list[str]
    #: the kernel's report, parsed
    kernel: JSON
    traceback: JSON
    #: the rest of the evidence
    other: dict[str, JSON]


def jobs_page(
    store: Store, limit: int = JOBS_SHOWN, namespaces: Collection[str] | None = None
) -> Context:
    """The newest jobs (of ``namespaces``; None: of all): name, namespace, state,
    progress, counts, failures by class, started, duration."""
    now = time.time()
    jobs = []
    for row in store.queries.recent_jobs(limit, namespaces=namespaces):
        status = store.queries.job_status(row.job_id)
        times = store.queries.job_times(row.job_id)
        jobs.append(JobRow(status, _timing(status, times, row.created_at, now)))
    return {"jobs": jobs, "live": any(j.status.state in LIVE_STATES for j in jobs)}


def job_page(store: Store, job_id: str) -> Context:
    """One job: its status, timing, charts (memory with the OOM kills, progress, tasks/s),
    failed tasks with their evidence, and the learned estimates of its memory keys."""
    now = time.time()
    status = store.queries.job_status(job_id)
    job = store.job(job_id)
    times = store.queries.job_times(job_id)
    samples = store.samples.series(job_id)
    throughput = store.samples.throughput(job_id)
    kills = store.samples.kills(job_id)
    live = status.state in LIVE_STATES
    starts = [t for t in (times.started_at, samples[0].ts if samples else None) if t]
    t0 = min(starts) if starts else job.created_at
    ends = [t0 + 1.0, *(s.ts for s in samples[-1:]), *(k.ts for k in kills)]
    ends += [b.t + b.step for b in throughput[-1:]]
    if times.ended_at:
        ends.append(times.ended_at)
    if live:
        ends.append(now)
    frame = Frame(t0=t0, t1=max(ends))
    marks = [_kill_mark(k, t0) for k in kills]
    failed = store.queries.failed_tasks(job_id, limit=FAILED_SHOWN)
    timing = _timing(status, times, job.created_at, now)
    return {
        "status": status,
        "job": job,
        "created_at": timing.created_at,
        "started_at": timing.started_at,
        "duration": timing.duration,
        "percent": timing.percent,
        "live": live,
        "samples": len(samples),
        "samples_available": store.samples.available(),
        "memory_chart": memory_chart(samples, marks, frame),
        "progress_chart": progress_chart(throughput, status.tasks, marks, frame, status.finished),
        "rate_chart": rate_chart(throughput, marks, frame),
        "kills": kills,
        # when each kill happened, from the start of the job (by attempt)
        "kill_at": {k.attempt_id: format_duration(k.ts - t0) for k in kills},
        "failed": failed,
        # the kernel's lines of each failed task (by task)
        "kernel_lines": {t.task_id: _kernel_lines(t) for t in failed},
        "failed_more": max(0, status.counts["failed"] - len(failed)),
        "estimates": store.queries.job_estimates(job_id),
        "now": now,
    }


def task_page(store: Store, task_id: int) -> Context | None:
    """One task and every attempt's evidence (None: no such task)."""
    task = store.queries.task(task_id)
    if task is None:
        return None
    attempts = []
    for attempt in store.queries.attempts(task_id):
        ev = attempt.evidence if isinstance(attempt.evidence, dict) else {}
        lines = ev.get("kernel_lines")
        attempts.append(
            AttemptEvidence(
                attempt=attempt,
                kernel_lines=[str(x) for x in lines] if isinstance(lines, list) else [],
                kernel=ev.get("kernel"),
                traceback=ev.get("traceback"),
                other={
                    k: v for k, v in ev.items() if k not in ("kernel_lines", "traceback", "kernel")
                },
            )
        )
    return {"task": task, "attempts": attempts}


# -- charts --------------------------------------------------------------------------------


def memory_chart(samples: list[Sample], marks: list[Mark], frame: Frame) -> str:
    """Admitted bytes against the budget and each worker's RSS, the OOM kills marked."""
    title = "Memory: admitted against the budget, each worker's RSS"
    admitted = [
        Series(
            "admitted to this job",
            [(s.ts, s.job_admitted_bytes) for s in samples],
            PALETTE[0],
            steps=True,
        ),
    ]
    if any(s.admitted_bytes != s.job_admitted_bytes for s in samples):
        admitted.append(
            Series(
                "admitted to all jobs",
                [(s.ts, s.admitted_bytes) for s in samples],
                PALETTE[1],
                steps=True,
            )
        )
    rss: list[Series] = []
    names = sorted({name for s in samples for name in s.workers}, key=_worker_order)
    drawn, summed = names[:WORKERS_DRAWN], names[WORKERS_DRAWN:]
    for i, name in enumerate(drawn):
        points = [(s.ts, s.workers[name]) for s in samples if name in s.workers]
        rss.append(Series(f"{name} RSS", points, PALETTE[2 + i % (len(PALETTE) - 2)]))
    if summed:
        points = [(s.ts, sum(s.workers.get(n, 0) for n in summed)) for s in samples]
        rss.append(Series(f"{len(summed)} more workers' RSS", points, PALETTE[-1]))
    series = admitted + rss
    budget = max((s.budget_bytes for s in samples), default=0)
    # Scaled by what the workers used and the limits that killed them: a key's first
    # attempt may be admitted the whole budget, which would flatten every RSS line at 0.
    used = [v for s in rss for _t, v in s.points]
    used += [float(m.data.get("limit", 0) or 0) for m in marks]
    given = sorted(v for s in admitted for _t, v in s.points)
    top = max(used, default=0.0) * 1.1
    y_max = None
    note = ""
    if top and given and given[-1] > 4 * top:
        # The admitted line most of the time, its peaks cut at the top.
        y_max = max(top, given[max(0, len(given) * 9 // 10 - 1)])
        note = (
            f"admitted reaches {format_size(int(given[-1]))} (cut at this scale): a key's "
            "first attempt may be given the whole budget"
        )
    else:
        top = max(top, given[-1] * 1.1 if given else 0.0)
    if not note and budget and budget <= 4 * max(top, 1):
        series.append(
            Series(
                "budget", [(s.ts, s.budget_bytes) for s in samples], "#666", dashed=True, steps=True
            )
        )
    elif budget and not note:
        note = f"budget {format_size(budget)} (above this scale)"
    if not samples:
        note = "no samples recorded for this job"
    return line_chart(
        title, frame, series, marks, y_format=_size_axis, y_bytes=True, y_max=y_max, note=note
    )


def progress_chart(
    throughput: Sequence[ThroughputPoint],
    total: int,
    marks: list[Mark],
    frame: Frame,
    finished: int | None = None,
) -> str:
    """Tasks finished over time; it ends at ``finished`` (the store's count now), which the
    last sampled second may not have seen yet."""
    points = [(b.t + b.step, float(b.done)) for b in throughput]
    if points:
        points.insert(0, (frame.t0, 0.0))
    if finished is not None and points and points[-1][1] < finished:
        points.append((max(frame.t1, points[-1][0]), float(finished)))
    return line_chart(
        "Progress: tasks finished",
        frame,
        [Series("tasks finished", points, PALETTE[2])],
        marks,
        y_max=float(max(total, 1)),
        y_whole=True,
        note=f"of {total} tasks",
    )


def rate_chart(throughput: Sequence[ThroughputPoint], marks: list[Mark], frame: Frame) -> str:
    ok = [(b.t, b.succeeded / b.step) for b in throughput]
    failed = [(b.t, b.failed / b.step) for b in throughput]
    series = [Series("attempts succeeded / s", ok, PALETTE[0], steps=True)]
    if any(v for _t, v in failed):
        series.append(Series("attempts failed / s", failed, PALETTE[5], steps=True))
    step = throughput[0].step if throughput else 1.0
    return line_chart("Tasks per second", frame, series, marks, note=f"per {format_duration(step)}")


# -- helpers -------------------------------------------------------------------------------


def _timing(status: JobProgress, times: JobTimes, created_at: float, now: float) -> Timing:
    started = times.started_at
    if started is None:
        duration = None
    elif status.state in LIVE_STATES:
        duration = now - started
    else:
        duration = (times.ended_at or started) - started
    tasks = status.tasks
    return Timing(
        created_at=created_at,
        started_at=started,
        duration=duration,
        percent=round(100.0 * status.finished / tasks, 1) if tasks else 0.0,
    )


def _kill_mark(kill: KillPoint, t0: float) -> Mark:
    limit = kill.limit_bytes
    title = (
        f"{kill.failure_class} at +{format_duration(kill.ts - t0)}: key {kill.key}, "
        f"limit {format_size(limit)}, task {kill.task_id}, attempt {kill.attempt_id}"
    )
    return Mark(
        t=float(kill.ts),
        label=str(kill.failure_class),
        title=title,
        data={
            "class": str(kill.failure_class),
            "key": str(kill.key),
            "limit": str(limit or ""),
            "task": str(kill.task_id),
        },
    )


def _kernel_lines(task: FailedTask) -> list[str]:
    """The kernel's lines of the task's last attempt that has some."""
    for attempt in reversed(task.attempts):
        ev = attempt.evidence
        lines = ev.get("kernel_lines") if isinstance(ev, Mapping) else None
        if isinstance(lines, list) and lines:
            return [str(line) for line in lines]
    return []


def _worker_order(name: str) -> tuple[int, str]:
    digits = "".join(c for c in name if c.isdigit())
    return (int(digits) if digits else 0, name)


def _size_axis(value: float) -> str:
    return format_size(int(value))


__all__ = [
    "AttemptEvidence",
    "JobRow",
    "Timing",
    "job_page",
    "jobs_page",
    "memory_chart",
    "progress_chart",
    "rate_chart",
    "task_page",
]
