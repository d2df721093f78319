"""The dashboard's SVG charts: what they draw, the kills marked, every text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from oomguard.ui.charts import (
    Frame,
    Mark,
    Series,
    format_duration,
    line_chart,
    nice_bytes,
    nice_max,
)

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
        [
            Mark(
                t=130.0,
                label="oom_cgroup",
                title="oom_cgroup: key k, limit 256MiB",
                data={"class": "oom_cgroup", "limit": "268435456"},
            )
        ],
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
    mark = kill.find(f"{SVG}line")
    assert mark is not None
    x1 = mark.get("x1")
    assert x1 is not None
    x = float(x1)
    assert x == pm(frame.x(130.0))
    assert frame.left < x < frame.width - frame.right
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "admitted" in texts and "w1 RSS" in texts and "oom_cgroup" in texts
    assert "0s" in texts and "1m00s" in texts


def pm(value: float) -> float:
    return float(f"{value:.1f}")


def test_text_from_the_store_is_escaped() -> None:
    evil = '<script>alert("x")</script>&'
    svg = line_chart(
        evil,
        Frame(0, 1),
        [Series(evil, [(0.0, 1.0)])],
        [Mark(0.5, evil, evil, {"key": evil})],
        note=evil,
    )
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


def _y_labels(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return [
        t.text or ""
        for t in root.iter(f"{SVG}text")
        if t.get("text-anchor") == "end" and t.get("font-size") == "11" and t.get("fill") == "#444"
    ]


def test_y_labels_are_round_numbers() -> None:
    from oomguard.ui.charts import y_divisions

    assert y_divisions(2.5, whole=False) == 5  # 0.5 steps, not 0.625
    assert y_divisions(16, whole=True) == 4
    assert y_divisions(15, whole=True) == 5
    assert y_divisions(7, whole=True) == 1  # 0 and 7, no 1.75
    svg = line_chart("Rate", Frame(0, 10), [Series("r", [(0.0, 2.3), (5.0, 1.0)])])
    labels = [x for x in _y_labels(svg) if x]
    assert "0.625" not in labels and "1.875" not in labels
    assert all(len(x.split(".")[-1]) <= 2 for x in labels if "." in x), labels


def test_memory_chart_is_scaled_by_the_workers_not_a_whole_budget_admission() -> None:
    from oomguard.store.samples import Sample
    from oomguard.ui.pages import memory_chart

    gib, mib = 1024**3, 1024**2
    # A key's first attempt is admitted the whole 23 GiB for a second; workers use ~60 MiB.
    samples = [
        Sample("j", float(t), 23 * gib, adm, adm, 1, {"w1": 60 * mib, "w2": 55 * mib})
        for t, adm in [
            (0, 23 * gib),
            (1, 64 * mib),
            (2, 128 * mib),
            (3, 128 * mib),
            (4, 64 * mib),
            (5, 128 * mib),
            (6, 64 * mib),
            (7, 128 * mib),
            (8, 64 * mib),
            (9, 128 * mib),
            (10, 64 * mib),
        ]
    ]
    svg = memory_chart(samples, [], Frame(0, 10))
    labels = [x for x in _y_labels(svg) if x.endswith("B")]  # the size axis
    assert labels[-1] in ("128MiB", "256MiB", "250MiB", "200MiB"), labels  # not 25GiB
    assert "admitted reaches 23GiB (cut at this scale)" in svg


def test_progress_chart_ends_at_the_finished_count() -> None:
    from oomguard.store.records import ThroughputPoint
    from oomguard.ui.pages import progress_chart

    buckets = [
        ThroughputPoint(t=0.0, step=1.0, succeeded=10, failed=0, done=10),
        ThroughputPoint(t=1.0, step=1.0, succeeded=5, failed=0, done=15),
    ]
    svg = progress_chart(buckets, 16, [], Frame(0, 3), finished=16)
    root = ET.fromstring(svg)
    (line,) = root.findall(f"{SVG}polyline")
    ys = [float(p.split(",")[1]) for p in line.get("points", "").split()]
    frame = Frame(0, 3)
    plot_h = frame.height - frame.top - frame.bottom
    top = nice_max(16)
    assert ys[-1] == pm(frame.top + plot_h - 16 / top * plot_h)  # 16 of 16, not 15
    assert ys[-2] == pm(frame.top + plot_h - 15 / top * plot_h)


def test_memory_keys_sort_by_their_values() -> None:
    from oomguard.units import key_order

    keys = ["f|n=100", "f|n=300", "f|n=400", "f|n=50", "f|n=900"]
    assert sorted(keys, key=key_order) == ["f|n=50", "f|n=100", "f|n=300", "f|n=400", "f|n=900"]
    assert sorted(["f|w=b", "f|w=a", "f|w=2"], key=key_order) == ["f|w=2", "f|w=a", "f|w=b"]
