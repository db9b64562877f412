"""The image codec of the line: frames' pixels in and out, and result masks as PNG.

Decoding reads the image header first and refuses sizes over `RLR_MAX_IMAGE_SIDE` per side or
`RLR_MAX_PIXELS` in all before any pixel is decoded, so a decompression bomb (or an 8192x8192
PNG of 200 KB that would take seconds and a gigabyte) costs a header read, not the worker's
memory and time.

JPEG frames (what cameras send) take the fast path: libjpeg-turbo through `simplejpeg`, the
header read in a microsecond or two, large frames decoded at 1/2, 1/4 or 1/8 scale (DCT
scaling), straight to RGB; the same pixels as Pillow, at about half the cost (a 64 px frame:
22 us instead of 130 us). Whatever it cannot decode goes the Pillow path, which decodes what it
can (and says precisely what is wrong with what it cannot).
"""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image

from daemon.errors import FrameError
from daemon.wire.schema import ENCODINGS, Frame
from rlr.data import decode_image, resize
from rlr.errors import DataError


def encode_image(image: np.ndarray, encoding: str = "jpeg",
                 quality: int = 90) -> tuple[bytes, dict]:
    """(data, extra encode_frame kwargs) for an RGB uint8 (H, W, 3) array."""
    if encoding == "raw":
        arr = np.ascontiguousarray(image)
        return arr.tobytes(), {"shape": arr.shape, "dtype": str(arr.dtype)}
    buf = io.BytesIO()
    if encoding == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    elif encoding == "png":
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    else:
        raise ValueError(f"encoding {encoding!r}: use one of {ENCODINGS}")
    return buf.getvalue(), {}


def decode_frame(frame: Frame, size: int, max_side: int,
                 max_pixels: int | None = None) -> np.ndarray:
    """The frame's image as uint8 RGB (size, size, 3), as the model expects it."""
    if frame.encoding == "raw":
        h, w = frame.shape[:2]
        _check_side(w, h, max_side, max_pixels)
        arr = np.frombuffer(frame.data, dtype=frame.dtype).reshape(frame.shape)
        if arr.dtype == np.uint16:
            arr = (arr >> 8).astype(np.uint8)
        if arr.ndim == 2 or arr.shape[2] == 1:
            arr = np.repeat(arr.reshape(h, w, 1), 3, axis=2)
        elif arr.shape[2] == 4:
            arr = arr[:, :, :3]
        return resize(np.ascontiguousarray(arr), size)
    if frame.encoding == "jpeg":
        image = _jpeg_fast(frame.data, size, max_side, max_pixels)
        if image is not None:
            return image
    try:
        with Image.open(io.BytesIO(frame.data)) as probe:  # header only: refuse bombs unread
            w, h = probe.size
            kind = probe.format
    except Image.DecompressionBombError as exc:  # Pillow's own limit, before ours
        raise FrameError("bad_dimensions", f"image too large to decode ({exc}); the limit is "
                         f"{max_side} px per side (RLR_MAX_IMAGE_SIDE)") from None
    except Exception as exc:
        raise FrameError("corrupt", f"not a readable {frame.encoding} image "
                         f"({type(exc).__name__}: {exc})") from None
    _check_side(w, h, max_side, max_pixels)
    expected = {"jpeg": "JPEG", "png": "PNG"}[frame.encoding]
    if kind != expected:
        raise FrameError("corrupt", f"encoding says {frame.encoding} but the data is {kind}")
    try:
        return decode_image(frame.data, size=size, name=f"frame {frame.frame_id}")
    except DataError as exc:
        raise FrameError("corrupt", str(exc)) from None


def jpeg_header_ok(data: bytes, max_side: int, max_pixels: int | None = None) -> bool:
    """Whether a JPEG may be decoded elsewhere (the GPU): its header reads, its size is within
    `max_side`, and it ends with the end-of-image marker (a decoder may return a truncated
    frame's top half without a word). False sends it the CPU path, which says what is wrong."""
    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return False
    return max(w, h) <= max_side and (max_pixels is None or w * h <= max_pixels) and \
        data.rstrip(b"\x00").endswith(b"\xff\xd9")


def _jpeg_fast(data: bytes, size: int, max_side: int,
               max_pixels: int | None = None) -> np.ndarray | None:
    """A JPEG frame decoded by libjpeg-turbo, or None where it refuses (not a JPEG, truncated,
    a variant it does not decode): the Pillow path then decides."""
    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    _check_side(w, h, max_side, max_pixels)
    least = 2 * size if min(h, w) > 4 * size else 0  # DCT scaling, still >= twice the size
    try:
        image = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=least,
                                       min_width=least)
    except ValueError:
        return None
    return resize(image, size)


def _check_side(w: int, h: int, max_side: int, max_pixels: int | None = None) -> None:
    if max(w, h) > max_side:
        raise FrameError("bad_dimensions", f"image {w}x{h} exceeds the limit of {max_side} px "
                         "per side (RLR_MAX_IMAGE_SIDE)")
    if max_pixels is not None and w * h > max_pixels:
        raise FrameError("bad_dimensions", f"image {w}x{h} has {w * h} pixels, over the limit "
                         f"of {max_pixels} (RLR_MAX_PIXELS)")


def mask_png(anomaly_map: np.ndarray, threshold: float) -> bytes:
    """Binary PNG mask of the pixels whose anomaly score exceeds `threshold`."""
    mask = (anomaly_map > threshold).astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_mask(data: bytes, size: int | None = None) -> np.ndarray:
    """A result's mask as a bool (H, W) array, optionally resized to the camera's size."""
    mask = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    if size is not None and mask.shape != (size, size):
        mask = resize(np.repeat(mask[..., None], 3, axis=2), size)[..., 0]
    return mask > 127


def thumbnail(frame: Frame, side: int, max_bytes: int, max_side: int,
              decoded: np.ndarray | None = None) -> bytes:
    """A small JPEG of `frame` for people to look at (the console): a JPEG frame within
    `max_bytes` as it came (no work at all); else the image the worker already decoded for
    the model (`decoded`, RGB uint8), shrunk to `side` if larger; else `frame` decoded anew."""
    if frame.encoding == "jpeg" and len(frame.data) <= max_bytes:
        return frame.data
    if decoded is not None:
        image = decoded if max(decoded.shape[:2]) <= side else resize(decoded, side)
        return encode_image(np.ascontiguousarray(image), "jpeg", quality=75)[0]
    return encode_image(decode_frame(frame, side, max_side), "jpeg", quality=75)[0]
