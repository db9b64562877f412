"""What the worker leaves for the console: a throttled thumbnail per camera, and the evidence
(pictures and masks of the anomalous frames) kept inside the alert entry itself."""

from __future__ import annotations

import io

from PIL import Image

from daemon.serve.memory_io import MemoryStreams
from daemon.serve.worker import Worker
from daemon.wire.schema import Alert, alert_evidence
from tests.unit.daemon.serve.helpers import LOW, frame, run, settings


def _jpeg_side(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"
        return im.size


def test_each_camera_gets_a_thumbnail_and_the_interval_throttles_them(engines):
    streams = MemoryStreams()
    for i in range(6):
        for cam in ("cam-a", "cam-b"):
            streams.add("line1", frame(i, cam))  # PNG frames: shrunk to a JPEG
    run(Worker(settings(thumb_interval_s=3600, thumb_side=32), engines(default=LOW), streams))
    assert set(streams.thumbs) == {("line1", "cam-a"), ("line1", "cam-b")}
    for (_, cam), (frame_id, _, data) in streams.thumbs.items():
        assert frame_id == f"{cam}-0"  # the first frame; the next ones came within the hour
        assert _jpeg_side(data) == (32, 32)


def test_no_thumbnails_when_switched_off(engines):
    streams = MemoryStreams()
    streams.add("line1", frame(0))
    run(Worker(settings(thumb_interval_s=0), engines(default=LOW), streams))
    assert streams.thumbs == {} and len(streams.results["line1"]) == 1


def test_an_alert_carries_pictures_and_masks_of_its_frames(engines):
    streams = MemoryStreams()
    for i in range(3):
        streams.add("line1", frame(i, "cam-a"))
    run(Worker(settings(alert_k=2, alert_n=3, alert_cooldown_s=60, masks="anomalous"),
               engines(default=LOW), streams))
    (_, alert), = streams.alerts["line1"]
    assert [fid for fid, _, _ in alert.evidence] == alert.frame_ids == ["cam-a-0", "cam-a-1"]
    # the wire form round-trips, and the bridges' JSON is not weighed down by the pictures
    kept = alert_evidence(alert.to_fields())
    assert [fid for fid, _, _ in kept] == alert.frame_ids
    for _, image, mask in kept:
        _jpeg_side(image)
        assert mask is not None and mask.startswith(b"\x89PNG")
    assert "evidence" not in Alert.from_fields(alert.to_fields()).to_json()
