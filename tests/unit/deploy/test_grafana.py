"""deploy/grafana/rlr-line.json: a Grafana dashboard whose queries name only metrics the
workers export (a renamed metric would leave a panel silently empty)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from daemon.serve.prometheus import WorkerMetrics

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "rlr-line.json"


def exported_names() -> set[str]:
    """Every sample name a worker exports (counters' _total, histograms' _bucket/_sum/_count),
    with each labelled metric given one child so that it shows up."""
    m = WorkerMetrics()
    for c in (m.frames_in, m.frames_done, m.frames_replayed, m.frames_skipped, m.alerts,
              m.pending):
        c.labels("l1")
    m.frames_dead.labels("l1", "corrupt")
    m.health_events.labels("l1", "dark", "raised")
    m.camera_unhealthy.labels("l1", "cam", "dark")
    m.show_models(["m-1"], True)
    for h in (m.batch_size, m.queue_wait, m.inference, m.latency):
        h.observe(1)
    text = generate_latest(m.registry).decode()
    return {ln.split("{")[0].split()[0] for ln in text.splitlines() if ln and ln[0] != "#"}


def queries(dashboard: dict) -> list[str]:
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    out += [v.get("query", "") for v in dashboard["templating"]["list"]
            if v.get("type") == "query"]
    return out


def test_the_dashboard_queries_only_metrics_the_workers_export():
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_names()
    assert "rlr_frames_done_total" in exported and "rlr_inference_seconds_bucket" in exported
    used = {name for q in queries(dashboard) for name in re.findall(r"\brlr_[a-z_]+", q)}
    assert len(used) >= 10
    assert used <= exported, f"not exported by any worker: {sorted(used - exported)}"


def test_the_dashboard_is_importable_json_with_unique_panel_ids():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
