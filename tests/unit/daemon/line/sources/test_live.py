"""The live source: camera indexes and stream URLs, reopened with backoff when they drop."""

from __future__ import annotations

import itertools

import numpy as np

from daemon.line.sources import live as live_module
from daemon.line.sources import open_source
from daemon.line.sources.live import LiveSource
from daemon.wire.backoff import Backoff


def test_indexes_and_urls_open_a_live_source():
    cam = open_source("0")
    assert isinstance(cam, LiveSource) and cam.target == 0
    for url in ("rtsp://user:secret@cam1:554/stream", "http://cam2/mjpg", "rtmp://cam3/live"):
        src = open_source(url)
        assert isinstance(src, LiveSource) and src.target == url


class FlakyCapture:
    """A camera that gives two frames, drops out once, then comes back."""

    opened = 0

    def __init__(self, target):
        FlakyCapture.opened += 1
        self.frames = 0 if FlakyCapture.opened == 2 else 2

    def isOpened(self):
        return self.frames > 0

    def read(self):
        if self.frames == 0:
            return False, None
        self.frames -= 1
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self):
        pass


def test_a_dropped_camera_is_reopened_with_backoff(monkeypatch):
    FlakyCapture.opened = 0
    monkeypatch.setattr(live_module.cv2, "VideoCapture", FlakyCapture)
    naps = []
    monkeypatch.setattr(live_module, "nap", lambda s, stopped: naps.append(s))
    source = LiveSource(0, Backoff(0.5, 10.0))
    frames = list(itertools.islice(source, 4))
    assert len(frames) == 4 and frames[0].image.shape == (4, 4, 3)
    assert naps == [0.5, 1.0]  # the first and the empty second capture each end in a retry
    assert source.backoff.current == 0.5  # reset once frames flowed again
