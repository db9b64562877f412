"""The hub's memory of cameras: the least recently seen is evicted (and logged) at the limit,
so a real camera always gets its tile; a new page's snapshot stays within its byte budget."""

from __future__ import annotations

import json

from daemon.console import hub as hubs
from daemon.console.hub import Hub
from daemon.wire.schema import Result


def _fields(camera: str, i: int) -> dict:
    return Result(frame_id=f"f{i}", camera=camera, score=0.5, is_anomaly=False, threshold=1.0,
                  model_version="m1", capture_ts=1.7e9, queue_ms=1.0, infer_ms=1.0,
                  latency_ms=2.0, worker="w1").to_fields()


def _hub() -> Hub:
    return Hub(None, None, ["l1"], "g")


def test_at_the_limit_the_least_recently_seen_camera_is_evicted_and_logged(monkeypatch, capsys):
    monkeypatch.setattr(hubs, "MAX_CAMERAS", 50)
    hub = _hub()
    hub._add_result("l1", "1-0", _fields("cam-real-old", 0))
    for i in range(60):  # a runaway producer inventing names
        hub._add_result("l1", f"{i + 2}-0", _fields(f"junk-{i}", i))
        if i == 5:
            hub._add_result("l1", "100-0", _fields("cam-real-old", 1))  # still reporting
    hub._add_result("l1", "200-0", _fields("cam-new", 0))
    assert len(hub.cameras) == 50
    assert hub.camera("l1", "cam-new") is not None  # a new real camera gets its tile
    assert hub.camera("l1", "junk-0") is None  # the least recently seen went
    assert hub.camera("l1", "cam-real-old") is None  # ... once 49 others came after it
    out = capsys.readouterr()
    assert "camera_evicted" in out.out + out.err


def test_the_snapshot_is_bounded_in_bytes_most_recent_cameras_first():
    hub = _hub()
    for i in range(2000):
        for j in range(3):
            hub._add_result("l1", f"{i}-{j}", _fields(f"cam-{i}", j))
    snap = hub.snapshot(max_bytes=100_000)
    assert len(json.dumps(snap)) < 110_000
    assert snap["tiles"][0]["camera"] == "cam-1999"
    assert snap["omitted"] == 2000 - len(snap["tiles"]) > 0
    assert snap["tiles"][0]["scores"] and snap["tiles"][-1]["scores"] == []
