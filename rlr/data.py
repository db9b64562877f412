"""Image I/O and the MVTec-style folder of normal training images.

Every image enters rlr through `load_image` / `decode_image`, so training, evaluation and the
streaming daemon see the same pixels: uint8 RGB, (H, W, 3).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from rlr.errors import ConfigError, DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

_ACCEPTED = (
    "accepted: 8-bit grayscale (L), RGB, palette (P), 16-bit grayscale (I;16), "
    "or RGBA/LA with a fully opaque alpha channel"
)
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_WITH_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
_MAX_LISTED = 10  # check_images lists this many bad files, then a count


def is_image_file(path: str | Path) -> bool:
    """True when the file name has one of `IMAGE_EXTENSIONS` (any case) and is not hidden."""
    p = Path(path)
    # "._name.png" AppleDouble files appear when data sets are copied from macOS; never images.
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


# ----------------------------------------------------------------------------- decoding


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3), resized to (size, size) when `size` is given."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found; check the path")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc}); check its permissions") from exc
    return decode_image(data, size=size, name=str(path))


def decode_image(data: bytes, size: int | None = None, name: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image (PNG, JPEG, ...) held in memory; same rules as `load_image`.

    `name` identifies the source (file path, frame id) in error messages.
    """
    try:
        img = Image.open(io.BytesIO(data))
        if size is not None and img.format == "JPEG" and min(img.size) > 4 * size:
            # Decode a large JPEG at 1/2, 1/4 or 1/8 scale (DCT scaling), still at least
            # twice the target size: a 12 MP frame for a 256 px model costs a fraction.
            img.draft("RGB", (2 * size, 2 * size))
        img.load()  # decode now: truncation and bad data show up here, not in a later convert
    except Exception as exc:
        # Pillow raises OSError, SyntaxError, ValueError, struct.error, zlib.error,
        # DecompressionBombError... depending on the codec; all mean "this file is broken".
        raise DataError(
            f"{name}: not a readable image ({type(exc).__name__}: {exc}); the file is corrupt, "
            "truncated or not an image - re-export or remove it"
        ) from exc
    array = _to_rgb(img, name)
    if size is not None:
        array = resize(array, size)
    return array


def _to_rgb(img: Image.Image, name: str) -> np.ndarray:
    mode = img.mode
    if mode in {"RGB", "L", "1"}:
        return np.asarray(img.convert("RGB"))
    if mode == "P":
        # A palette may carry a transparent entry; treat it like any other alpha channel.
        if "transparency" in img.info:
            return _drop_opaque_alpha(img.convert("RGBA"), name)
        return np.asarray(img.convert("RGB"))
    if mode in _SIXTEEN_BIT:
        return _sixteen_bit_to_rgb(np.asarray(img), name, mode)
    if mode in _WITH_ALPHA:
        return _drop_opaque_alpha(img.convert("RGBA"), name)
    channels = len(img.getbands())
    raise DataError(
        f"{name}: image mode {mode} with {channels} channel(s) is not supported; {_ACCEPTED}. "
        "Convert it to RGB (e.g. `convert in.tif -colorspace sRGB out.png`)"
    )


def _drop_opaque_alpha(rgba: Image.Image, name: str) -> np.ndarray:
    array = np.asarray(rgba)
    if array[..., 3].min() < 255:
        # Transparent pixels have no defined colour; guessing a background would invent data.
        raise DataError(
            f"{name}: image has transparency (alpha < 255 in some pixels); {_ACCEPTED}. "
            "Flatten it onto the background your camera sees and save it as RGB"
        )
    return np.ascontiguousarray(array[..., :3])


def _sixteen_bit_to_rgb(array: np.ndarray, name: str, mode: str) -> np.ndarray:
    # Scale by the container's bit depth, not by min/max: a stretched dark image would look
    # like a normal bright one, and brightness is exactly what a defect can change.
    if array.min() < 0 or array.max() > 65535:
        raise DataError(
            f"{name}: mode {mode} values span {array.min()}..{array.max()}, outside 16-bit "
            f"range; {_ACCEPTED}"
        )
    gray = np.round(array.astype(np.float32) / 257.0).astype(np.uint8)  # 65535 / 255 = 257
    return np.repeat(gray[..., None], 3, axis=2)


def load_mask(path: str | Path, size: int | None = None) -> np.ndarray:
    """Read a ground-truth mask as bool (H, W): True where the pixel value is non-zero.

    Accepts 0/255 masks (MVTec) and label images with values 0, 1, 2, ... (VisA); a palette
    image is read by index. `size` resizes to (size, size) with nearest-neighbour, so no
    in-between values appear at defect borders.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: mask file not found; check the ground-truth folder")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            values = np.asarray(img)
    except Exception as exc:  # Pillow raises many types for broken files; see decode_image
        raise DataError(
            f"{path}: not a readable mask ({type(exc).__name__}: {exc}); re-export it as a "
            "PNG with 0 for normal pixels and non-zero for defects"
        ) from exc
    if values.ndim == 3:
        # Colour masks: any colour channel set marks a defect; alpha says nothing about it.
        colour = values[..., :1] if mode in {"LA", "La"} else values[..., :3]
        mask = colour.any(axis=2)
    else:
        mask = values != 0
    if size is not None:
        if size < 1:
            raise ConfigError(f"mask size {size} must be a positive number of pixels")
        if mask.shape != (size, size):
            small = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
            mask = small.astype(bool)
    return mask


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 (H, W, 3) image to (size, size): area filter down, bilinear up."""
    if size < 1:
        raise ConfigError(f"image size {size} must be a positive number of pixels")
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    # INTER_AREA averages the source pixels (no aliasing of fine texture when shrinking).
    interp = cv2.INTER_AREA if size < max(h, w) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def to_tensor(images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """Stack uint8 (H, W, 3) images into a float tensor (B, 3, H, W) in [0, 1]."""
    if len(images) == 0:
        raise DataError("to_tensor got no images; pass at least one (H, W, 3) uint8 array")
    batch = np.stack(list(images)) if not isinstance(images, np.ndarray) else images
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise DataError(
            f"to_tensor expects uint8 images of shape (H, W, 3), got {batch.dtype} "
            f"{batch.shape}; load images with rlr.data.load_image"
        )
    hwc = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)  # a view
    # One pass from uint8 HWC into a contiguous float CHW, then scale in place (converting the
    # view first and making it contiguous afterwards would copy the floats once more).
    out = torch.empty(hwc.shape, dtype=torch.float32)
    return out.copy_(hwc).div_(255.0)  # (B, 3, H, W)


# ----------------------------------------------------------------------------- data sets


@dataclass(frozen=True)
class Sample:
    """One image of a data set. `label`: 0 normal, 1 anomalous; `mask_path` for pixel truth.

    `group` is "" for samples that count in the headline metrics; a non-empty name (e.g.
    "p=1/3") marks test samples reported as their own row and kept out of the headline.
    """

    path: Path
    class_name: str
    label: int = 0
    mask_path: Path | None = None
    group: str = ""


def check_images(samples: Iterable[Sample], progress: bool = False) -> None:
    """Decode every image once; raise one DataError listing all unusable files, if any.

    Run before training so a bad file fails the job in minutes, not hours.
    """
    samples = list(samples)
    iterator: Iterable[Sample] = samples
    if progress:
        from tqdm import tqdm

        iterator = tqdm(samples, desc="checking images", unit="img")
    problems: list[str] = []
    for sample in iterator:
        try:
            load_image(sample.path)
        except DataError as exc:
            problems.append(str(exc))
    if not problems:
        return
    raise DataError(
        f"{len(problems)} of {len(samples)} images cannot be used:\n"
        f"{format_problems(problems)}\nFix or remove these files, then run again."
    )


def format_problems(problems: Sequence[str], limit: int = _MAX_LISTED) -> str:
    """One indented line per problem, the first `limit` of them, then "... and N more"."""
    listed = "\n".join(f"  - {p}" for p in problems[:limit])
    more = len(problems) - limit
    return listed + (f"\n  ... and {more} more" if more > 0 else "")


def split_validation(
    samples: Sequence[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Split normal samples into (train, validation), per class, reproducibly.

    Each file gets u = hash(seed, class, file name) in [0, 1) and goes to validation when
    u < fraction, so adding or removing a file never moves the others. Then, per class: if
    fraction > 0, the class has at least 2 images and none landed in validation, the one with
    the lowest u moves there; if all landed in validation, the one with the highest u stays in
    training. Both lists keep the input order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(
            f"validation fraction {fraction} must be in [0, 1); e.g. 0.1 keeps 10% for validation"
        )
    by_class: dict[str, list[tuple[float, int]]] = {}
    for index, sample in enumerate(samples):
        u = _unit_hash(seed, sample.class_name, Path(sample.path).name)
        by_class.setdefault(sample.class_name, []).append((u, index))

    in_val: set[int] = set()
    for entries in by_class.values():
        entries.sort()
        chosen = {i for u, i in entries if u < fraction}
        if fraction > 0 and len(entries) >= 2 and not chosen:
            chosen = {entries[0][1]}
        if len(chosen) == len(entries):
            chosen.discard(entries[-1][1])
        in_val |= chosen
    train = [s for i, s in enumerate(samples) if i not in in_val]
    val = [s for i, s in enumerate(samples) if i in in_val]
    return train, val


def _unit_hash(seed: int, class_name: str, file_name: str) -> float:
    # sha256, not hash(): Python salts str hashes per process, which would reshuffle every run.
    digest = hashlib.sha256(f"{seed}\0{class_name}\0{file_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def list_images(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted, de-duplicated list of images."""
    out: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.update(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        elif path.is_file():
            if not is_image_file(path):
                raise DataError(
                    f"{path} is not an image file; accepted extensions: "
                    f"{', '.join(sorted(IMAGE_EXTENSIONS))}"
                )
            out.add(path)
        else:
            raise DataError(f"{path} does not exist; pass existing image files or folders")
    if not out:
        shown = ", ".join(str(p) for p in paths) or "(no paths given)"
        raise DataError(
            f"no images found in {shown}; accepted extensions: "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    return sorted(out)
