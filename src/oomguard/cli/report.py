"""How a job's outcome is told to a person: one renderer for the end of ``oomguard run``,
``oomguard status --store`` and ``oomguard status --server``.

It prints the job's state and counts, why it was stopped (if it was), then its tasks that
failed for good grouped by failure class and memory key: how many, which, the message,
the last attempt's limit and peak, the kernel's own line (wrapped, never cut) and the
option that changes the outcome. See docs/ARCHITECTURE.md, "Telling what failed".
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable

from oomguard.jobs.jsonvalue import JSON
from oomguard.jobs.status import Failure, JobStatus
from oomguard.units import format_size

#: the width lines are wrapped at (kernel lines and messages are wrapped, never cut)
WIDTH = 100

#: what to change, by the class a task failed with (``{limit}``: its last attempt's limit)
_FIX = {
    "needs_more_memory": "give it more memory: --worker-memory (each task's most; now "
    "{limit}) and --memory-budget",
    "oom_cgroup": "raise --worker-memory (the most one task may get; now {limit})",
    "oom_watchdog": "raise --worker-memory (the most one task may get; now {limit})",
    "oom_ancestor": "lower --memory-budget or --workers: the cgroup above the workers ran out",
    "oom_system": "lower --memory-budget or --workers: the machine ran out of memory",
    "memory_error": "raise --worker-memory (now {limit}): the task's allocations failed",
    "timeout": "raise --timeout",
    "error": "fix the task: its traceback is in `oomguard status --json`",
    "crashed": "fix the task (it crashed its worker), or --retries",
    "killed": "a signal from outside oomguard killed it: --retries",
    "lost": "its scheduler died while it ran: --lost-retries",
    "upstream_failed": "a replicate of its parameter set failed (above)",
}


def task_label(fn: str) -> str:
    """A task reference as a person reads it: a command by its command line."""
    from oomguard.jobs.command import display

    return display(fn)


def wrap(text: str, indent: str, first: str = "") -> list[str]:
    lines: list[str] = []
    for i, para in enumerate(text.splitlines() or [""]):
        lines.extend(
            textwrap.wrap(
                para,
                WIDTH,
                initial_indent=indent + (first if i == 0 else " " * len(first)),
                subsequent_indent=indent + " " * len(first),
                break_long_words=True,
                break_on_hyphens=False,
            )
            or [indent + first]
        )
    return lines


def _key_label(failure: Failure) -> str:
    key = failure.memory_key
    if key and "|" in key:
        return key.split("|", 1)[1]
    params = failure.params
    if isinstance(params, dict) and params:
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in list(params.items())[:3])
    return "-"


def _kernel_line(evidence: JSON) -> str | None:
    found = evidence.get("kernel_lines") if isinstance(evidence, dict) else None
    lines = [str(x) for x in found] if isinstance(found, list) else []
    for line in reversed(lines):
        if "Killed process" in line or "killed process" in line:
            return line
    return lines[-1] if lines else None


def header_lines(status: JobStatus) -> list[str]:
    """The job's state, counts, failed attempts by class, budget and output."""
    where = f", namespace {status.namespace}" if status.namespace != "default" else ""
    lines = [f"job {status.job_id} ({task_label(status.name)}{where}): {status.state}"]
    lines.append(
        f"  tasks: {status.finished} of {status.tasks} finished: "
        + ", ".join(f"{k} {v}" for k, v in status.counts.items() if v)
    )
    if status.stopped:
        lines.extend(wrap(f"the job {status.stopped}", "  "))
    if status.failures_by_class:
        lines.append(
            "  failed attempts by class (retried or not): "
            + ", ".join(f"{k} {v}" for k, v in sorted(status.failures_by_class.items()))
        )
    if status.memory_budget_bytes:
        lines.append(
            f"  memory budget: {format_size(status.memory_budget_bytes)} "
            f"(isolation: {status.isolation})"
        )
    if status.out:
        lines.append(f"  results: {status.out}")
    return lines


def failure_lines(failures: Iterable[Failure], failed: int, groups_shown: int = 5) -> list[str]:
    """The tasks that failed for good (``failed`` in all), grouped by class and key; the
    first ``groups_shown`` groups are told."""
    groups: dict[tuple[str, str], list[Failure]] = {}
    for f in failures:
        groups.setdefault((str(f.failure_class), _key_label(f)), []).append(f)
    if not groups:
        return []
    shown = sum(len(g) for g in groups.values())
    more = f" (the first {shown} shown)" if failed > shown else ""
    lines = [
        f"  failed for good: {failed} task{'s' if failed != 1 else ''}{more}, by class and key:"
    ]
    for (fc, key), items in list(groups.items())[:groups_shown]:
        ids = ", ".join(str(f.task_id) for f in items[:8]) + (", ..." if len(items) > 8 else "")
        first = items[0]
        lines.append(
            f"    {fc}, {key}: {len(items)} task{'s' if len(items) != 1 else ''} "
            f"({task_label(first.fn)}; task {ids})"
        )
        if first.error:
            lines.extend(wrap(first.error, "      "))
        last = first.attempts[-1] if first.attempts else None
        ev = last.evidence if last is not None else None
        limit = last.limit_bytes if last is not None else None
        peak = last.peak_bytes if last is not None else None
        if limit or peak:
            lines.append(
                f"      last attempt ({first.attempt_count} in all): "
                f"limit {format_size(limit) if limit else '-'}, "
                f"peak {format_size(peak) if peak else '-'}"
            )
        if (kernel := _kernel_line(ev)) is not None:
            lines.extend(wrap(kernel, "      ", "kernel: "))
        if (fix := _FIX.get(fc)) is not None:
            lines.extend(
                wrap(
                    fix.format(limit=format_size(limit) if limit else "-"), "      ", "to change: "
                )
            )
    if len(groups) > groups_shown:
        lines.append(
            f"    ... and {len(groups) - groups_shown} more groups: oomguard status --failures N"
        )
    return lines


def render(status: JobStatus, failures: Iterable[Failure], groups_shown: int = 5) -> list[str]:
    """Everything a person is told about a job: :func:`header_lines`, :func:`failure_lines`."""
    failed = status.counts.get("failed", 0)
    return header_lines(status) + failure_lines(failures, failed, groups_shown)


__all__ = ["WIDTH", "failure_lines", "header_lines", "render", "task_label", "wrap"]
