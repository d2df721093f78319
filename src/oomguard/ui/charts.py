"""Charts drawn on the server as inline SVG: no JavaScript, no library, readable offline.

A chart is lines over a shared time axis, with vertical marks (the OOM kills) on it.
Every text in the SVG is escaped; the ``<svg>`` says how many points it draws
(``data-points``) and each mark carries its class, key and limit as a ``<title>`` (the
tooltip) and as ``data-`` attributes. See docs/ARCHITECTURE.md ("The dashboard").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

#: line colours, in order (readable on white, told apart by the colour-blind)
PALETTE = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#d55e00",
    "#f0e442",
    "#000000",
)
KILL_COLOUR = "#c0392b"


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    colour: str = PALETTE[0]
    dashed: bool = False
    #: drawn as steps (a value holds until the next one), not as slopes
    steps: bool = False


@dataclass(frozen=True)
class Mark:
    """A vertical mark on the time axis (an OOM kill)."""

    t: float
    label: str
    title: str
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Frame:
    """The size of a chart and the time span it shows."""

    t0: float
    t1: float
    width: int = 900
    height: int = 240
    left: int = 78
    right: int = 16
    top: int = 22
    bottom: int = 46

    def x(self, t: float) -> float:
        span = max(self.t1 - self.t0, 1e-9)
        return self.left + (t - self.t0) / span * (self.width - self.left - self.right)


def nice_max(value: float) -> float:
    """A round number at least ``value`` (1, 2, 2.5, 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= value:
            return float(factor * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def nice_bytes(value: float) -> float:
    """A round number of bytes at least ``value`` (in KiB, MiB, GiB steps)."""
    if value <= 0:
        return 1024.0**2
    unit = 1024.0 ** max(0, math.floor(math.log(value, 1024)))
    return nice_max(value / unit) * unit


def y_divisions(top: float, whole: bool) -> int:
    """How many intervals the y axis of ``top`` is cut into so that every label is a round
    number: 4 or 5 (``2.5`` in 5 steps of 0.5, not 4 of 0.625), fewer where neither is;
    ``whole`` (counts): only whole-number steps."""
    for n in (4, 5, 3, 2):
        step = top / n
        if whole:
            if abs(step - round(step)) < 1e-9 and round(step) >= 1:
                return n
        elif abs(step * 100 - round(step * 100)) < 1e-6:
            return n
    return 1


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h04m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def tick(seconds: float, span: float) -> str:
    """A time axis label: tenths of a second on a short axis, else :func:`format_duration`."""
    return f"{seconds:.1f}s" if span < 20 else format_duration(seconds)


def line_chart(
    title: str,
    frame: Frame,
    series: Sequence[Series],
    marks: Sequence[Mark] = (),
    *,
    y_format: Callable[[float], str] = lambda v: f"{v:g}",
    y_max: float | None = None,
    y_bytes: bool = False,
    y_whole: bool = False,
    note: str = "",
) -> str:
    """An SVG line chart with its legend (a string of markup, every text escaped)."""
    values = [y for s in series for _t, y in s.points]
    wanted = y_max if y_max is not None else max(values, default=0.0) * 1.05
    top = nice_bytes(wanted) if y_bytes else nice_max(wanted)
    plot_h = frame.height - frame.top - frame.bottom
    plot_w = frame.width - frame.left - frame.right

    def y(value: float) -> float:
        return frame.top + plot_h - min(max(value, 0.0), top) / top * plot_h

    points = sum(len(s.points) for s in series)
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {frame.width} {frame.height}" data-points="{points}" '
        f'data-marks="{len(marks)}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{frame.left}" y="{frame.top}" width="{plot_w}" height="{plot_h}" '
        'fill="#fafafa" stroke="#ccc"/>',
        f'<text x="{frame.left}" y="14" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    if note:
        out.append(
            f'<text x="{frame.width - frame.right}" y="14" font-size="11" text-anchor="end" '
            f'fill="#555">{escape(note)}</text>'
        )
    divisions = 4 if y_bytes else y_divisions(top, y_whole)
    for i in range(divisions + 1):
        value = top * i / divisions
        yy = y(value)
        out.append(
            f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{yy:.1f}" '
            f'y2="{yy:.1f}" stroke="#e4e4e4"/>'
            f'<text x="{frame.left - 6}" y="{yy + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#444">{escape(y_format(value))}</text>'
        )
    span = frame.t1 - frame.t0
    for i in range(6):
        t = frame.t0 + span * i / 5
        xx = frame.x(t)
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        out.append(
            f'<text x="{xx:.1f}" y="{frame.top + plot_h + 15}" font-size="11" '
            f'text-anchor="{anchor}" fill="#444">{escape(tick(t - frame.t0, span))}</text>'
        )
    for s in series:
        if not s.points:
            continue
        coords = []
        prev: float | None = None
        for t, v in s.points:
            if s.steps and prev is not None:
                coords.append(f"{frame.x(t):.1f},{prev:.1f}")
            prev = y(v)
            coords.append(f"{frame.x(t):.1f},{prev:.1f}")
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(
            f'<polyline class="series" data-name="{escape(s.name)}" fill="none" '
            f'stroke="{escape(s.colour)}" stroke-width="1.8"{dash} '
            f'points="{" ".join(coords)}"><title>{escape(s.name)}</title></polyline>'
        )
        if len(s.points) == 1:
            out.append(
                f'<circle cx="{coords[0].split(",")[0]}" cy="{prev:.1f}" r="2.5" '
                f'fill="{escape(s.colour)}"/>'
            )
    legend_x = float(frame.left)
    for s in series:
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        ly = frame.height - 9
        out.append(
            f'<line x1="{legend_x:.1f}" x2="{legend_x + 18:.1f}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="{escape(s.colour)}" stroke-width="2.5"{dash}/>'
            f'<text x="{legend_x + 22:.1f}" y="{ly}" font-size="11" fill="#333">'
            f"{escape(s.name)}</text>"
        )
        legend_x += 30 + 6.2 * len(s.name)
    if marks:
        ly = frame.height - 9
        out.append(
            f'<line x1="{legend_x:.1f}" x2="{legend_x:.1f}" y1="{ly - 10}" y2="{ly + 2}" '
            f'stroke="{KILL_COLOUR}" stroke-width="2"/><text x="{legend_x + 5:.1f}" y="{ly}" '
            f'font-size="11" fill="{KILL_COLOUR}">ran out of memory</text>'
        )
    labelled = -1e9  # marks closer than a label's width share the first one's label
    for mark in marks:
        xx = frame.x(mark.t)
        label = escape(mark.label) if xx - labelled > 8 + 6 * len(mark.label) else ""
        labelled = xx if label else labelled
        data = "".join(f' data-{escape(k)}="{escape(v)}"' for k, v in mark.data.items())
        out.append(
            f'<g class="kill"{data}><title>{escape(mark.title)}</title>'
            f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{frame.top}" '
            f'y2="{frame.top + plot_h}" stroke="{KILL_COLOUR}" stroke-width="1.5"/>'
            f'<path d="M{xx - 5:.1f},{frame.top} L{xx + 5:.1f},{frame.top} L{xx:.1f},'
            f'{frame.top + 8}Z" fill="{KILL_COLOUR}"/>'
            f'<text x="{xx + 4:.1f}" y="{frame.top + 18}" font-size="10" '
            f'fill="{KILL_COLOUR}">{label}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


__all__ = [
    "PALETTE",
    "Frame",
    "Mark",
    "Series",
    "format_duration",
    "line_chart",
    "nice_bytes",
    "nice_max",
    "y_divisions",
]
