"""The task page: every attempt of one task, its retry lineage told in one line and drawn
as peak against limit per attempt (inline SVG, as :mod:`oomguard.ui.charts` draws), and
the learned estimate of the task's memory key.

Reads only (``store.queries`` and ``store.dashboard``). See docs/ARCHITECTURE.md
("The dashboard").
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from oomguard.jobs.model import FailureClass
from oomguard.store.dashboard import LineageAttempt
from oomguard.store.protocol import Store
from oomguard.store.records import TaskDetail
from oomguard.ui import pages
from oomguard.ui.charts import KILL_COLOUR, PALETTE, nice_bytes
from oomguard.units import format_size

#: chart size (px): bars of at most this many attempts are drawn, the latest ones
ATTEMPTS_DRAWN = 40
#: the failure classes of an attempt killed for memory
MEMORY_CLASSES = frozenset(c.value for c in FailureClass if c.is_oom)
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 900, 220, 78, 16, 22, 46


def task_page(store: Store, task_id: int) -> dict[str, object] | None:
    """What the task page shows (None: no such task): the task, each attempt with its
    evidence, the lineage in words and as a chart, the key's learned estimate."""
    data = pages.task_page(store, task_id)
    if data is None:
        return None
    lineage = store.dashboard.lineage(task_id)
    task = data["task"]
    assert isinstance(task, TaskDetail)
    key = task.memory_key or task.fn
    return {
        **data,
        "lineage": lineage,
        "story": lineage_story(lineage),
        "attempts_chart": attempts_chart(lineage),
        "estimate": store.dashboard.key_estimate(str(key)) if key else None,
        "estimate_key": key,
    }


def lineage_story(lineage: Sequence[LineageAttempt]) -> str:
    """The retry lineage in one line: ``attempt 1 oom_cgroup at 256 MiB -> attempt 2 at
    512 MiB succeeded, peak 410 MiB``."""
    parts = []
    for a in lineage:
        limit = f" at {format_size(a.limit_bytes)}" if a.limit_bytes else ""
        how = a.failure_class if a.failure_class else a.state
        peak = f", peak {format_size(a.peak_bytes)}" if a.peak_bytes else ""
        parts.append(f"attempt {a.n}{limit} {how}{peak}")
    return " \u2192 ".join(parts)


def attempts_chart(lineage: Sequence[LineageAttempt]) -> str:
    """Peak against limit across the attempts: per attempt, the limit as an outlined bar
    and the peak as a filled one inside it; an attempt killed for memory drawn in the
    kills' colour. Every text escaped."""
    shown = list(lineage)[-ATTEMPTS_DRAWN:]
    title = "Memory per attempt: peak against limit"
    values = [float(v) for a in shown for v in (a.limit_bytes, a.peak_bytes) if v]
    top = nice_bytes(max(values, default=0.0) * 1.05)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y(value: float) -> float:
        return TOP + plot_h - min(max(value, 0.0), top) / top * plot_h

    out = [
        f'<svg class="chart attempts" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" data-bars="{len(shown)}" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#ccc"/>',
        f'<text x="{LEFT}" y="14" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    if not shown:
        out.append(
            f'<text x="{WIDTH - RIGHT}" y="14" font-size="11" text-anchor="end" '
            'fill="#555">no attempt yet</text>'
        )
    for i in range(5):
        value = top * i / 4
        yy = y(value)
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" '
            f'stroke="#e4e4e4"/><text x="{LEFT - 6}" y="{yy + 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="#444">{escape(format_size(int(value)))}</text>'
        )
    slot = plot_w / max(len(shown), 1)
    bar = min(60.0, slot * 0.6)
    for i, a in enumerate(shown):
        x = LEFT + slot * i + (slot - bar) / 2
        killed = a.failure_class in MEMORY_CLASSES
        colour = KILL_COLOUR if killed else PALETTE[0]
        about = (
            f"attempt {a.n}: {a.failure_class or a.state}, limit "
            f"{format_size(a.limit_bytes) if a.limit_bytes else 'none'}, peak "
            f"{format_size(a.peak_bytes) if a.peak_bytes else 'unknown'}"
        )
        out.append(
            f'<g class="attempt" data-n="{a.n}" data-class="{escape(a.failure_class or "")}" '
            f'data-limit="{a.limit_bytes or ""}" data-peak="{a.peak_bytes or ""}">'
            f"<title>{escape(about)}</title>"
        )
        if a.limit_bytes:
            ly = y(a.limit_bytes)
            out.append(
                f'<rect class="limit" x="{x:.1f}" y="{ly:.1f}" width="{bar:.1f}" '
                f'height="{TOP + plot_h - ly:.1f}" fill="none" stroke="#666" '
                'stroke-dasharray="4 3"/>'
            )
        if a.peak_bytes:
            py = y(a.peak_bytes)
            inner = bar * 0.6
            out.append(
                f'<rect class="peak" x="{x + (bar - inner) / 2:.1f}" y="{py:.1f}" '
                f'width="{inner:.1f}" height="{TOP + plot_h - py:.1f}" fill="{colour}"/>'
            )
        out.append(
            f'<text x="{x + bar / 2:.1f}" y="{TOP + plot_h + 15}" font-size="11" '
            f'text-anchor="middle" fill="#444">#{a.n}</text></g>'
        )
    ly = HEIGHT - 9
    out.append(
        f'<rect x="{LEFT}" y="{ly - 9}" width="14" height="10" fill="none" stroke="#666" '
        f'stroke-dasharray="4 3"/><text x="{LEFT + 20}" y="{ly}" font-size="11" fill="#333">'
        f'limit</text><rect x="{LEFT + 60}" y="{ly - 9}" width="10" height="10" '
        f'fill="{PALETTE[0]}"/><text x="{LEFT + 76}" y="{ly}" font-size="11" fill="#333">'
        f'peak</text><rect x="{LEFT + 116}" y="{ly - 9}" width="10" height="10" '
        f'fill="{KILL_COLOUR}"/><text x="{LEFT + 132}" y="{ly}" font-size="11" '
        f'fill="{KILL_COLOUR}">peak of an attempt killed for memory</text>'
    )
    out.append("</svg>")
    return "".join(out)


__all__ = ["attempts_chart", "lineage_story", "task_page"]
