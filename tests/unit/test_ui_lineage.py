"""The task page's lineage: told in one line, drawn as peak against limit per attempt
(valid SVG, every text escaped), and read from a real store (the lineage and the key's
estimate as frozen records)."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from oomguard.store.dashboard import LearnedEstimate, LineageAttempt
from oomguard.store.factory import open_store
from oomguard.store.records import KeyEstimate
from oomguard.ui.task_page import attempts_chart, lineage_story

SVG = "{http://www.w3.org/2000/svg}"
MiB = 2**20


def _attempt(n: int, cls: str | None, limit: int | None, peak: int | None) -> LineageAttempt:
    return LineageAttempt(
        attempt_id=n,
        n=n,
        worker="w1",
        pid=100 + n,
        state="failed" if cls else "succeeded",
        started_at=10.0 * n,
        ended_at=10.0 * n + 2.5,
        failure_class=cls,
        admitted_bytes=limit,
        limit_bytes=limit,
        peak_bytes=peak,
    )


def test_the_story_of_a_task_killed_then_given_more() -> None:
    lineage = [
        _attempt(1, "oom_cgroup", 256 * MiB, 256 * MiB),
        _attempt(2, None, 512 * MiB, 410 * MiB),
    ]
    assert lineage_story(lineage) == (
        "attempt 1 at 256MiB oom_cgroup, peak 256MiB \u2192 "
        "attempt 2 at 512MiB succeeded, peak 410MiB"
    )
    assert lineage_story([]) == ""
    assert lineage[1].duration == 2.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        lineage[0].n = 3  # type: ignore[misc]


def test_the_chart_draws_limit_and_peak_per_attempt_and_parses_as_svg() -> None:
    lineage = [
        _attempt(1, "oom_cgroup", 256 * MiB, 256 * MiB),
        _attempt(2, "<b>odd</b>", None, None),
        _attempt(3, None, 512 * MiB, 410 * MiB),
    ]
    svg = attempts_chart(lineage)
    root = ET.fromstring(svg)
    bars = root.findall(f"{SVG}g")
    assert [g.get("data-n") for g in bars] == ["1", "2", "3"]
    assert bars[1].get("data-class") == "<b>odd</b>"  # escaped in the markup, parsed back
    assert "<b>" not in svg
    assert [len(g.findall(f"{SVG}rect")) for g in bars] == [2, 0, 2]
    killed = bars[0].find(f"{SVG}rect[@class='peak']")
    ok = bars[2].find(f"{SVG}rect[@class='peak']")
    assert killed is not None and ok is not None
    assert killed.get("fill") != ok.get("fill")  # a kill is drawn in the kills' colour
    limit = bars[2].find(f"{SVG}rect[@class='limit']")
    assert limit is not None and float(limit.get("height", 0)) > float(ok.get("height", 0))
    assert root.get("data-bars") == "3"
    empty = ET.fromstring(attempts_chart([]))
    assert empty.get("data-bars") == "0" and "no attempt yet" in attempts_chart([])


def test_the_store_reads_a_lineage_and_a_key_estimate(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "s.sqlite")) as store:
        assert store.dashboard.lineage(12345) == []
        assert store.dashboard.key_estimate("k") is None
        store.put_estimates([KeyEstimate("k", 300 * MiB, 250 * MiB, 4)])
        estimate = store.dashboard.key_estimate("k")
    assert isinstance(estimate, LearnedEstimate)
    assert (estimate.key, estimate.bytes, estimate.peak_bytes, estimate.samples) == (
        "k",
        300 * MiB,
        250 * MiB,
        4,
    )
    assert estimate.killed_at is None and estimate.unfit_cap is None
    with open_store(str(tmp_path / "s.sqlite")) as store:
        store.put_estimates([KeyEstimate("k", 300 * MiB, 250 * MiB, 4, 128 * MiB, 0)])
        killed = store.dashboard.key_estimate("k")
    assert killed is not None and killed.killed_at == 128 * MiB and killed.unfit_cap is None
