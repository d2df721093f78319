"""deploy/grafana/oomguard.json: a Grafana dashboard whose every query names metrics a
real `oomguard serve` exposes on /metrics (and whose every panel has a query)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fixtures.serve_process import serve

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "oomguard.json"


def _queried(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for panel in dashboard["panels"]:
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} queries nothing"
        for target in targets:
            expr = target["expr"]
            without_labels = re.sub(r"\{[^}]*\}", "", expr)
            for name in re.findall(r"\boomguard_[a-z_]+\b", without_labels):
                names.setdefault(name, set()).add(panel["title"])
    return names


def test_every_metric_the_dashboard_queries_is_served(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "oomguard"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    queried = _queried(dashboard)
    assert {
        "oomguard_memory_admitted_bytes",
        "oomguard_worker_rss_bytes",
        "oomguard_attempt_failures_total",
    } <= set(queried)
    with serve(tmp_path, "--workers", "1") as served:
        r = httpx.post(f"{served.url}/v1/jobs", json={"task": "oomguard.examples:fail", "args": {}})
        assert r.status_code == 201, r.text
        text = httpx.get(f"{served.url}/metrics").text
    exposed: set[str] = set()
    for family in text_string_to_metric_families(text):
        exposed.add(family.name)
        if family.type == "counter":
            exposed.add(family.name + "_total")
        exposed.update(sample.name for sample in family.samples)
    missing = {name: sorted(panels) for name, panels in queried.items() if name not in exposed}
    assert not missing, missing


def test_the_names_are_read_from_the_queries_not_from_their_labels() -> None:
    panel = {
        "title": "t",
        "targets": [{"expr": 'sum by (class) (rate(oomguard_nope_total{class=~"oom_.*"}[5m]))'}],
    }
    assert _queried({"panels": [panel]}) == {"oomguard_nope_total": {"t"}}
