"""Property tests: no input makes the OOM parser raise, and feeding equals parsing."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from oomguard.kernlog import OomEvent, OomLogParser, parse_lines

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "oom_reports"
REPORT_LINES = [
    line
    for path in sorted(CORPUS.glob("*.log"))
    for line in path.read_text(encoding="utf-8").splitlines()
    if any(
        key in line
        for key in ("oom-kill", "Kill", "oom_reaper", "Task", "invoked", "PID", "memory:")
    )
]

report_line = st.sampled_from(REPORT_LINES)
cut_line = st.tuples(report_line, st.integers(min_value=0, max_value=400)).map(
    lambda pair: pair[0][: pair[1]]
)
any_line = st.one_of(st.text(max_size=200), report_line, cut_line)


def _incremental(lines: list[str]) -> list[OomEvent]:
    parser = OomLogParser()
    out: list[OomEvent] = []
    for line in lines:
        out.extend(parser.feed(line))
        parser.partial()
        parser.pending()
    out.extend(parser.flush())
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(any_line, max_size=40))
def test_arbitrary_and_cut_lines_never_raise(lines: list[str]) -> None:
    events = parse_lines(lines)
    for event in events:
        event.to_json()
    assert _incremental(lines) == events


@settings(max_examples=150, deadline=None)
@given(st.lists(report_line, max_size=30), st.lists(report_line, max_size=30), st.randoms())
def test_interleaved_reports(first: list[str], second: list[str], rnd: object) -> None:
    # Merge two reports line by line in a random order, keeping each one's own order.
    import random

    assert isinstance(rnd, random.Random)
    a, b, merged = list(first), list(second), []
    while a or b:
        source = a if (a and (not b or rnd.random() < 0.5)) else b
        merged.append(source.pop(0))
    events = parse_lines(merged)
    assert _incremental(merged) == events
    assert all(e.victim_pid is None or e.victim_pid >= 0 for e in events)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=2000))
def test_whole_text_blob(text: str) -> None:
    lines = text.splitlines(keepends=True)
    assert _incremental(lines) == parse_lines(lines)
