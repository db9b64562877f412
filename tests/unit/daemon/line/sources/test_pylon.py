"""pylon:// against pylon's own camera emulator (PYLON_CAMEMU, in the pypylon wheel): free
run, pictures fed from a folder through the emulator's ImageFilename feature and read back in
every pixel format, software triggers with their part ids, and one clear line for each kind
of bad input."""

from __future__ import annotations

import collections
import importlib.util
import itertools
import os

import numpy as np
import pytest
from PIL import Image

os.environ["PYLON_CAMEMU"] = "2"  # read when pylon starts: before the first camera is listed

from daemon.line.camera import CameraConfig, PartTrigger, Trigger
from daemon.line.sources import open_source
from rlr.errors import DataError

SERIAL = "0815-0000"
H, W = 48, 64


class Triggers:
    def __init__(self, parts):
        self.waiting = collections.deque(PartTrigger(p, 0.0, "test") for p in parts)

    def next(self, timeout_s):
        return self.waiting.popleft() if self.waiting else None

    def skip(self):
        return 0


@pytest.fixture
def pictures(tmp_path):
    """Three known pictures the emulator sends in turn (sorted by name)."""
    rng = np.random.default_rng(3)
    images = []
    for i in range(3):
        img = np.zeros((H, W, 3), np.uint8)
        img[..., i] = 180  # a flat colour each: a Bayer mosaic of it demosaics exactly
        img[:8, :8] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / f"{i:02d}.png")
        images.append(img)
    return tmp_path, images


def _feed(folder, pixel_format, **kw):
    return CameraConfig(pixel_format=pixel_format, roi=(0, 0, W, H),
                        features=(("TestImageSelector", "Off"), ("ImageFilename", str(folder)),
                                  ("ImageFileMode", "On")), **kw)


def test_free_run_numbers_its_frames_without_gaps():
    config = CameraConfig(fps=100, roi=(0, 0, 320, 240), pixel_format="Mono8")
    frames = list(itertools.islice(open_source(f"pylon://{SERIAL}", camera=config), 5))
    assert all(f.image.shape == (240, 320, 3) for f in frames)
    numbers = [f.cam_frame for f in frames]
    assert numbers == list(range(numbers[0], numbers[0] + 5))
    assert sum(f.lost for f in frames) == 0 and all(f.cam_ts is not None for f in frames)


def test_pictures_from_a_folder_come_back_exactly_in_rgb(pictures):
    folder, images = pictures
    frames = itertools.islice(open_source("pylon://", camera=_feed(folder, "RGB8Packed",
                                                                    fps=50)), 3)
    for frame, image in zip(frames, images, strict=True):
        np.testing.assert_array_equal(frame.image, image)


@pytest.mark.parametrize("pixel_format", ["BayerRG8", "BayerGR8", "BayerGB8", "BayerBG8"])
def test_bayer_frames_demosaic_to_the_pictures_colours(pictures, pixel_format):
    folder, images = pictures
    frames = itertools.islice(open_source("pylon://", camera=_feed(folder, pixel_format,
                                                                    fps=50)), 3)
    for frame, image in zip(frames, images, strict=True):
        np.testing.assert_array_equal(frame.image[12:-2, 12:-2], image[12:-2, 12:-2])


def test_mono_frames_are_grey(pictures):
    folder, _ = pictures
    frame = next(iter(open_source("pylon://", camera=_feed(folder, "Mono8", fps=50))))
    assert (frame.image[..., 0] == frame.image[..., 2]).all() and frame.image[20, 20, 0] > 0


def test_each_software_trigger_gives_one_frame_with_its_part_id(pictures):
    folder, images = pictures
    config = _feed(folder, "RGB8Packed", trigger=Trigger("software"),
                   triggers=Triggers(["SN-1", "SN-2", "SN-3"]))
    frames = list(itertools.islice(open_source(f"pylon://{SERIAL}", camera=config), 3))
    assert [f.part for f in frames] == ["SN-1", "SN-2", "SN-3"]
    for frame, image in zip(frames, images, strict=True):
        np.testing.assert_array_equal(frame.image, image)


@pytest.mark.parametrize(("config", "words"), [
    (CameraConfig(features=(("ExposureTme", "800"),)), "has no feature 'ExposureTme'"),
    (CameraConfig(exposure_us=1e12), "refused ExposureTime=1000000000000: Value"),
    (CameraConfig(features=(("PixelFormat", "Purple8"),)), "refused PixelFormat=Purple8"),
    (CameraConfig(pixel_format="Mono12"), "Mono12, which cannot be converted"),
])
def test_bad_settings_are_one_clear_line(config, words):
    with pytest.raises(DataError) as err:
        next(iter(open_source(f"pylon://{SERIAL}", camera=config)))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_serial_no_camera_has_lists_the_ones_found():
    with pytest.raises(DataError, match=r"no camera with serial 4711 \(found: 0815-0000, "):
        next(iter(open_source("pylon://4711")))


def test_without_pypylon_the_error_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pypylon" else real(name, *a))
    with pytest.raises(DataError, match=r"needs pypylon.*pip install 'rlr\[pylon\]'"):
        open_source("pylon://")
