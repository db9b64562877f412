"""What every industrial camera shares: features written in an order cameras accept, pixel
formats turned into RGB, lost frames counted from the frame counter, the acquisition loop's
triggers and reconnects. The drivers are tested against pylon's emulator and Aravis's fake
camera (tests/unit/daemon/line/sources/test_pylon.py, tests/integration/line/test_cameras.py);
here an in-memory driver stands in for one."""

from __future__ import annotations

import collections
import itertools

import cv2
import numpy as np
import pytest

from daemon.line.camera import (
    CameraConfig,
    CameraGone,
    CameraSource,
    FeatureRefused,
    Grab,
    PartTrigger,
    Trigger,
    configure,
    to_rgb,
)
from daemon.line.camera import FrameCounter as Counter
from daemon.wire.backoff import Backoff
from rlr.errors import DataError


class MemoryCamera:
    """A camera in memory: a node map, frames numbered from 1, an outage on demand."""

    name = "memory 1"

    def __init__(self, nodes=None, absent_at_first=False):
        self.nodes = nodes or {"PixelFormat": "Mono8", "TriggerMode": "Off",
                               "TriggerSource": "Line1", "ExposureTimeAbs": "100"}
        self.written, self.fired, self.present = [], 0, not absent_at_first
        self.connects, self.frame, self.skip = 0, 0, set()
        self.gone_after: int | None = None

    def connect(self):
        if not self.present:
            raise CameraGone("no camera with serial 1 (found: none)")
        self.connects += 1
        return "Memory 1"

    def has(self, feature):
        return feature in self.nodes

    def write(self, feature, value):
        if feature == "ExposureTimeAbs" and float(value) > 1000:
            raise FeatureRefused("Value 5000 must be smaller than or equal 1000.")
        self.nodes[feature] = value
        self.written.append((feature, value))

    def read(self, feature):
        return self.nodes[feature]

    def start(self):
        self.frame = 0

    def fire(self):
        self.fired += 1

    def grab(self, timeout_s):
        if self.gone_after is not None and self.frame >= self.gone_after:
            self.gone_after = None
            raise CameraGone("the camera was removed")
        self.frame += 1
        while self.frame in self.skip:
            self.frame += 1
        return Grab(np.full((2, 3), self.frame, np.uint8), "Mono8", self.frame * 1000,
                    self.frame)

    def check(self):
        pass

    def close(self):
        pass


class MemoryTriggers:
    """Triggers waiting in order; `later` ones arrive once the waiting ones are skipped."""

    def __init__(self, parts, later=()):
        self.waiting = collections.deque(PartTrigger(p, 0.0, "test") for p in parts)
        self.later, self.skipped = list(later), 0

    def next(self, timeout_s):
        return self.waiting.popleft() if self.waiting else None

    def skip(self):
        self.skipped += len(self.waiting)
        self.waiting = collections.deque(PartTrigger(p, 0.0, "test") for p in self.later)
        return self.skipped


def test_features_are_written_in_an_order_cameras_accept():
    config = CameraConfig(features=(("Gamma", "1.0"),), exposure_us=800, pixel_format="Mono8",
                          roi=(16, 8, 640, 480), fps=30)
    names = [names[0] for names, _, _ in config.writes()]
    assert names.index("PixelFormat") < names.index("Width")  # the format sets the limits
    assert names[names.index("Width") - 2:names.index("Width")] == ["OffsetX", "OffsetY"]
    assert names[-1] == "Gamma"  # the user's own features have the last word
    hardware = CameraConfig(trigger=Trigger("hardware", "Line2", "falling", 50)).writes()
    assert (("TriggerSource",), "Line2", True) in hardware
    assert (("TriggerActivation",), "FallingEdge", True) in hardware
    assert (("TriggerDelay", "TriggerDelayAbs"), "50", True) in hardware


def test_configure_uses_the_name_the_camera_has_and_its_own_refusal():
    camera = MemoryCamera()
    assert configure(camera, CameraConfig(exposure_us=500, trigger=Trigger("software"))) \
        == "Mono8"
    assert ("ExposureTimeAbs", "500") in camera.written
    assert ("TriggerSource", "Software") in camera.written
    with pytest.raises(DataError, match=r"refused ExposureTimeAbs=5000: Value 5000 must"):
        configure(camera, CameraConfig(exposure_us=5000))
    with pytest.raises(DataError, match="has no feature 'Gama'"):
        configure(camera, CameraConfig(features=(("Gama", "1"),)))


def test_a_pixel_format_that_cannot_be_converted_is_refused_at_start():
    camera = MemoryCamera({"PixelFormat": "Mono12", "TriggerMode": "Off"})
    with pytest.raises(DataError, match="Mono12, which cannot be converted") as err:
        configure(camera, CameraConfig())
    assert "\n" not in str(err.value)


def _mosaic(rgb, pattern):
    """A Bayer sensor's raw image of `rgb`, pattern named as GenICam does (first row)."""
    channel = {"R": 0, "G": 1, "B": 2}
    raw = np.empty(rgb.shape[:2], np.uint8)
    for (dy, dx), c in zip(((0, 0), (0, 1), (1, 0), (1, 1)), pattern[:2] + pattern[2:],
                           strict=True):
        raw[dy::2, dx::2] = rgb[dy::2, dx::2, channel[c]]
    return raw


@pytest.mark.parametrize("pattern", ["RGGB", "GRBG", "GBRG", "BGGR"])
def test_bayer_mosaics_come_back_as_their_colours(pattern):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 90, 30
    fmt = f"Bayer{pattern[:2]}8"
    out = to_rgb(_mosaic(rgb, pattern), fmt)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[2:-2, 2:-2], rgb[2:-2, 2:-2])


def test_mono_rgb_and_bgr_become_rgb():
    mono = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(to_rgb(mono, "Mono8")[..., 1], mono)
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb(rgb, "RGB8"), rgb)
    np.testing.assert_array_equal(to_rgb(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "BGR8"), rgb)
    with pytest.raises(DataError, match="Mono16 cannot be converted"):
        to_rgb(mono, "Mono16")


def test_the_frame_counter_counts_gaps_not_restarts():
    counter = Counter()
    assert [counter.see(n) for n in (1, 2, 5, 6, 9)] == [0, 0, 2, 0, 2]
    assert counter.see(1) == 0  # the camera restarted (or a 16-bit counter wrapped)
    counter.restart()
    assert counter.see(40) == 0 and counter.lost == 4


def test_free_run_frames_carry_the_camera_clock_and_lost_frames():
    camera = MemoryCamera()
    camera.skip = {3, 4}
    frames = list(itertools.islice(CameraSource(camera, CameraConfig()), 3))
    assert [f.cam_frame for f in frames] == [1, 2, 5]
    assert [f.lost for f in frames] == [0, 0, 2]
    assert frames[2].cam_ts == 5000 and frames[2].image.shape == (2, 3, 3)


def test_each_software_trigger_fires_once_and_its_frame_takes_the_part_id():
    camera = MemoryCamera()
    config = CameraConfig(trigger=Trigger("software"), triggers=MemoryTriggers(["A1", "A2"]))
    frames = list(itertools.islice(CameraSource(camera, config), 2))
    assert [f.part for f in frames] == ["A1", "A2"] and camera.fired == 2


def test_software_trigger_needs_a_feed():
    with pytest.raises(DataError, match="trigger feed"):
        CameraSource(MemoryCamera(), CameraConfig(trigger=Trigger("software")))


def test_a_camera_never_found_is_one_clear_error():
    source = CameraSource(MemoryCamera(absent_at_first=True), CameraConfig())
    with pytest.raises(DataError, match=r"^camera memory 1: no camera with serial 1"):
        next(iter(source))


def test_a_camera_that_goes_away_is_reconnected_and_stale_triggers_dropped():
    camera = MemoryCamera()
    camera.gone_after = 2
    triggers = MemoryTriggers(["P1", "P2", "P3", "P4", "P5"], later=["P6"])
    source = CameraSource(camera, CameraConfig(trigger=Trigger("software"), triggers=triggers),
                          backoff=Backoff(0.001, 0.001))
    frames = list(itertools.islice(source, 3))
    # P3 was fired as the camera went; P4 and P5 passed while it was away: never fired late
    assert [f.part for f in frames] == ["P1", "P2", "P6"]
    assert camera.connects == 2 and triggers.skipped == 2
    assert frames[2].lost == 0  # the counter started again with the connection


def test_bad_trigger_words_are_refused():
    with pytest.raises(DataError, match="trigger mode 'edge'"):
        Trigger("edge")
    with pytest.raises(DataError, match="trigger edge 'up'"):
        Trigger("hardware", edge="up")
