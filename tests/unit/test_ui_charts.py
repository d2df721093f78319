"""The dashboard's SVG charts: what they draw, the kills marked, every text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from oomguard.ui.charts import Frame, Mark, Series, format_duration, line_chart, nice_bytes

SVG = "{http://www.w3.org/2000/svg}"


def test_lines_marks_and_legend_are_drawn_and_parse_as_svg() -> None:
    frame = Frame(t0=100.0, t1=160.0)
    svg = line_chart(
        "Memory",
        frame,
        [
            Series("admitted", [(100.0, 0.0), (130.0, 512.0), (160.0, 256.0)], steps=True),
            Series("w1 RSS", [(110.0, 128.0)]),
        ],
        [Mark(t=130.0, label="oom_cgroup", title="oom_cgroup: key k, limit 256MiB",
              data={"class": "oom_cgroup", "limit": "268435456"})],
        y_bytes=True,
    )
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("data-points") == "4"
    assert root.get("data-marks") == "1"
    lines = root.findall(f"{SVG}polyline")
    assert [line.get("data-name") for line in lines] == ["admitted", "w1 RSS"]
    # Steps: each value holds until the next one (an extra corner per later point).
    assert len(lines[0].get("points", "").split()) == 5
    kill = root.find(f"{SVG}g[@class='kill']")
    assert kill is not None and kill.get("data-class") == "oom_cgroup"
    assert kill.findtext(f"{SVG}title") == "oom_cgroup: key k, limit 256MiB"
    # The mark sits where its time is on the axis: halfway.
    x = float(kill.find(f"{SVG}line").get("x1"))  # type: ignore[union-attr]
    assert x == pm(frame.x(130.0))
    assert frame.left < x < frame.width - frame.right
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "admitted" in texts and "w1 RSS" in texts and "oom_cgroup" in texts
    assert "0s" in texts and "1m00s" in texts


def pm(value: float) -> float:
    return float(f"{value:.1f}")


def test_text_from_the_store_is_escaped() -> None:
    evil = '<script>alert("x")</script>&'
    svg = line_chart(evil, Frame(0, 1), [Series(evil, [(0.0, 1.0)])],
                     [Mark(0.5, evil, evil, {"key": evil})], note=evil)
    assert "<script>" not in svg
    root = ET.fromstring(svg)  # still well-formed
    assert root.findtext(f"{SVG}title") == evil


def test_an_empty_chart_says_so_and_still_draws_axes() -> None:
    svg = line_chart("Nothing", Frame(0, 10), [Series("x", [])], note="no samples")
    root = ET.fromstring(svg)
    assert root.get("data-points") == "0"
    assert root.find(f"{SVG}polyline") is None
    assert "no samples" in [t.text for t in root.iter(f"{SVG}text")]


def test_round_numbers_for_axes_and_durations() -> None:
    assert nice_bytes(700 * 1024**2) == 1000 * 1024**2  # ticks at 250MiB
    assert nice_bytes(3 * 1024**3) == 5 * 1024**3
    assert nice_bytes(0) == 1024**2
    assert format_duration(42) == "42s"
    assert format_duration(185) == "3m05s"
    assert format_duration(7440) == "2h04m"
