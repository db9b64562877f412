"""A small folder of images and a short video file, for the sources that read them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image


def images(n: int, size: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    imgs = images(3)
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(root / ("sub" if i == 2 else "") / f"{i}.png")
    return root, imgs


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    assert writer.isOpened()
    for level in (40, 120, 200):  # flat grey frames survive MJPG nearly unchanged
        writer.write(np.full((24, 32, 3), level, np.uint8))
    writer.release()
    return path
