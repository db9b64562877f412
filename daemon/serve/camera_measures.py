"""Camera health measures of one decoded frame, on a 64x64 thumbnail: luminance and clipped
pixels, sharpness (variance of the Laplacian), a perceptual hash and an 8x8 signature, and the
shift of the framing against the camera's reference (phase correlation). Runs on the decode
threads, beside decoding, a few hundred microseconds a frame; the camera-health rule
(`daemon.serve.rules.camera_health`) judges them. Pure: numpy and OpenCV only.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

THUMB = 64
_HANNING = cv2.createHanningWindow((THUMB, THUMB), cv2.CV_32F)
_LEVELS = np.arange(256, dtype=np.float64)


class Measures(NamedTuple):
    mean: float  # mean gray level
    low: float  # fraction of pixels at 0-4
    high: float  # fraction of pixels at 251-255
    sharpness: float  # variance of the Laplacian of the thumbnail over its own variance
    signature: np.ndarray  # (8, 8) float32 mean gray levels
    dhash: int  # 64-bit difference hash
    thumb: np.ndarray  # (64, 64) float32
    shift: tuple[float, float, float] | None  # (dx, dy, response) against the reference


def measure(image: np.ndarray, reference: np.ndarray | None = None) -> Measures:
    """The health measures of one decoded (H, W, 3) uint8 RGB frame. Everything is computed
    on a 64x64 thumbnail: what these checks look for shows at that size, and it keeps the
    cost per frame to a couple of hundred microseconds."""
    small = image if image.shape[:2] == (THUMB, THUMB) else \
        cv2.resize(image, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    thumb8 = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    thumb = thumb8.astype(np.float32)
    hist = np.bincount(thumb8.ravel(), minlength=256) / thumb8.size
    hashed = cv2.resize(thumb8, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    dhash = int(np.packbits((hashed[:, 1:] > hashed[:, :-1]).ravel()).view(">u8")[0])
    _, std = cv2.meanStdDev(cv2.Laplacian(thumb, cv2.CV_32F))
    _, spread = cv2.meanStdDev(thumb)
    shift = None if reference is None else shift_against(reference, thumb)
    return Measures(float(hist @ _LEVELS), float(hist[:5].sum()), float(hist[251:].sum()),
                    # detail relative to contrast: a darker or flatter scene is not "blurred"
                    float(std[0, 0]) ** 2 / (float(spread[0, 0]) ** 2 + 1.0),
                    cv2.resize(thumb, (8, 8), interpolation=cv2.INTER_AREA), dhash, thumb,
                    shift)


def shift_against(reference: np.ndarray, thumb: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, response) of `thumb`'s framing against the camera's `reference` (both 64x64)."""
    (dx, dy), response = cv2.phaseCorrelate(reference, thumb, _HANNING)
    return float(dx), float(dy), float(response)
