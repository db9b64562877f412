"""Synthetic multi-class inspection data: procedural textures and objects with drawn defects.

For tests, the demo and pixel-level benchmarks that need ground-truth masks. Everything is
procedural (numpy + OpenCV), so it needs no download and no optional dependency, and a seed
fixes every pixel.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from rlr.errors import ConfigError, DataError

CLASSES: tuple[str, ...] = ("fabric", "tile", "wood", "carpet", "washer")
DEFECTS: tuple[str, ...] = ("scratch", "spot", "missing", "color")

# A drawn defect must cover this share of the image and change it by this much on average
# (in 0..255 levels, inside the mask); otherwise it is redrawn elsewhere.
_AREA_RANGE = (0.005, 0.08)
_MIN_CONTRAST = 25.0
_MIN_PIXEL_CHANGE = 12  # a mask pixel counts as changed above this many levels ...
_MIN_COVERED = 0.85  # ... and at least this share of the mask must change
_MAX_TRIES = 20

_Image = np.ndarray  # uint8 (H, W, 3)


# ----------------------------------------------------------------------------- helpers


def _coords(size: int, rng: np.random.Generator, max_angle: float, max_shift: float):
    """Rotated, shifted pixel coordinates (u, v), float32 (size, size): pose jitter per sample."""
    theta = np.deg2rad(rng.uniform(-max_angle, max_angle))
    dx, dy = rng.uniform(-max_shift, max_shift, size=2) * size
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x -= size / 2 + dx
    y -= size / 2 + dy
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    return x * c + y * s, -x * s + y * c


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in [0, 1], float32 (size, size), with about `cells` blobs per side."""
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    return np.clip(cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _colorize(shade: np.ndarray, dark: Sequence[float], light: Sequence[float]) -> np.ndarray:
    """Map a shade in [0, 1] (H, W) onto a colour ramp: float32 (H, W, 3)."""
    dark_a = np.asarray(dark, np.float32)
    light_a = np.asarray(light, np.float32)
    return dark_a + shade[..., None] * (light_a - dark_a)


def _finish(rgb: np.ndarray, rng: np.random.Generator) -> _Image:
    # Lighting and sensor variation: global gain/offset jitter, then mild pixel noise.
    gain = rng.uniform(0.92, 1.08)
    offset = rng.uniform(-8.0, 8.0)
    mean = rgb.mean()
    out = (rgb - mean) * rng.uniform(0.92, 1.08) + mean * gain + offset
    out += rng.normal(0.0, 2.0, size=out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- classes


def _fabric(rng: np.random.Generator, size: int) -> np.ndarray:
    # Plain weave: threads alternate between running along u and along v, cell by cell.
    u, v = _coords(size, rng, max_angle=3.0, max_shift=0.5)
    period = size / 16
    over = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    along_u = np.abs(np.sin(np.pi * v / (period / 2)))
    along_v = np.abs(np.sin(np.pi * u / (period / 2)))
    shade = np.where(over, along_u, along_v) * 0.7 + _noise(rng, size, 24) * 0.3
    return _colorize(shade, (20, 35, 80), (90, 125, 200))


def _tile(rng: np.random.Generator, size: int) -> np.ndarray:
    # Ceramic tiles with grout lines; every tile has its own slight tint.
    u, v = _coords(size, rng, max_angle=1.0, max_shift=0.5)
    period = size / 3.5
    grout = size / 40
    iu, iv = np.floor(u / period).astype(np.int32), np.floor(v / period).astype(np.int32)
    tints = rng.uniform(-10, 10, size=(16, 16)).astype(np.float32)
    tint = tints[iu % 16, iv % 16]
    fu, fv = u - iu * period, v - iv * period
    on_grout = (np.minimum(fu, period - fu) < grout / 2) | (np.minimum(fv, period - fv) < grout / 2)
    tile = (
        np.asarray((205, 190, 160), np.float32)
        + (tint + (_noise(rng, size, 12) - 0.5) * 14)[..., None]
    )
    return np.where(on_grout[..., None], np.asarray((115, 110, 105), np.float32), tile)


def _wood(rng: np.random.Generator, size: int) -> np.ndarray:
    # Grain: stripes along u whose position wanders with low-frequency noise.
    _, v = _coords(size, rng, max_angle=8.0, max_shift=0.5)
    warp = (_noise(rng, size, 4) - 0.5) * size * 0.15
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (v + warp) / (size / 9))
    shade = grain**2 * 0.75 + _noise(rng, size, 40) * 0.25
    return _colorize(shade, (95, 55, 30), (185, 130, 80))


def _carpet(rng: np.random.Generator, size: int) -> np.ndarray:
    # Multi-octave noise: a fine isotropic texture with a mottled green-grey colour.
    lum = 0.5 * _noise(rng, size, size // 3) + 0.3 * _noise(rng, size, size // 8)
    lum += 0.2 * _noise(rng, size, 6)
    tint = (_noise(rng, size, 5) - 0.5) * 30
    rgb = _colorize(lum, (40, 70, 35), (140, 175, 110))
    rgb[..., 0] += tint
    return rgb


def _washer(rng: np.random.Generator, size: int) -> np.ndarray:
    # A metal ring on a dark belt; position, radius and sheen direction vary per part.
    u, v = _coords(size, rng, max_angle=180.0, max_shift=0.03)
    r = np.hypot(u, v)
    outer = size * rng.uniform(0.35, 0.38)
    inner = size * rng.uniform(0.14, 0.16)
    # Anti-aliased ring coverage, so edges are not jagged at small sizes.
    cover = np.clip(outer - r + 0.5, 0, 1) * np.clip(r - inner + 0.5, 0, 1)
    phi = np.arctan2(v, u)
    sheen = 0.55 + 0.25 * np.cos(2 * phi) + 0.1 * (r - inner) / (outer - inner)
    metal = _colorize(
        np.clip(sheen + (_noise(rng, size, 30) - 0.5) * 0.1, 0, 1), (70, 72, 78), (215, 215, 222)
    )
    belt = _colorize(_noise(rng, size, 20), (25, 25, 30), (50, 50, 58))
    return belt + cover[..., None] * (metal - belt)


_MAKERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "fabric": _fabric,
    "tile": _tile,
    "wood": _wood,
    "carpet": _carpet,
    "washer": _washer,
}


def make_normal(class_name: str, rng: np.random.Generator, size: int = 128) -> _Image:
    """One defect-free image of `class_name`: uint8 (size, size, 3) RGB."""
    if class_name not in _MAKERS:
        raise ConfigError(
            f"unknown synthetic class {class_name!r}; choose from {', '.join(CLASSES)}"
        )
    if size < 32:
        raise ConfigError(f"synthetic image size {size} is too small; use 32 or more")
    return _finish(_MAKERS[class_name](rng, size).astype(np.float32), rng)


# ----------------------------------------------------------------------------- defects


def _scratch(image: _Image, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # A thin curved line (quadratic Bezier), much darker or brighter than the surface.
    size = image.shape[0]
    p0, p1, p2 = (rng.uniform(0.15, 0.85, size=(3, 2)) * size).astype(np.float32)
    t = np.linspace(0, 1, 40, dtype=np.float32)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    pts = np.round(curve).astype(np.int32).reshape(-1, 1, 2)
    width = max(2, round(size * rng.uniform(0.012, 0.022)))
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.polylines(mask, [pts], isClosed=False, color=255, thickness=width)
    return mask, _contrast_colour(image, mask, rng)


def _spot(image: _Image, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # A stain: an ellipse tinted towards a dark or bright colour, with the texture showing through.
    size = image.shape[0]
    mask = np.zeros(image.shape[:2], np.uint8)
    centre = tuple(int(c) for c in rng.uniform(0.2, 0.8, size=2) * size)
    axes = tuple(int(a) for a in rng.uniform(0.035, 0.08, size=2) * size)
    cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 255, thickness=-1)
    return mask, _contrast_colour(image, mask, rng)


def _missing(image: _Image, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # A broken-off piece: an irregular polygon where the part is gone and black shows through.
    size = image.shape[0]
    centre = rng.uniform(0.2, 0.8, size=2) * size
    n = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, size=n))
    radii = rng.uniform(0.05, 0.11, size=n) * size
    pts = centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    hole = rng.uniform(0, 15, size=image.shape).astype(np.float32)
    return mask, hole


def _color(image: _Image, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Discoloration: per-channel gains plus an offset, so it shows on grey parts as well.
    size = image.shape[0]
    mask = np.zeros(image.shape[:2], np.uint8)
    for _ in range(int(rng.integers(1, 4))):  # a few overlapping ellipses: an irregular blob
        centre = tuple(int(c) for c in rng.uniform(0.25, 0.75, size=2) * size)
        axes = tuple(int(a) for a in rng.uniform(0.03, 0.07, size=2) * size)
        cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 255, thickness=-1)
    gains = np.asarray(rng.permutation([1.5, 0.6, 0.8]), np.float32)
    offset = np.zeros(3, np.float32)
    offset[int(np.argmax(gains))] = rng.uniform(35, 60)
    return mask, image.astype(np.float32) * gains + offset


def _contrast_colour(image: _Image, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill colour for a mark: dark on bright surfaces, bright on dark ones (float32 image)."""
    local = image[mask > 0].mean() if mask.any() else image.mean()
    level = rng.uniform(10, 40) if local > 110 else rng.uniform(200, 240)
    tint = rng.uniform(-10, 10, size=3)
    alpha = rng.uniform(0.75, 0.95)  # some texture shows through, like a real stain
    return image.astype(np.float32) * (1 - alpha) + (level + tint).astype(np.float32) * alpha


_DRAWERS: dict[str, Callable[[_Image, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "scratch": _scratch,
    "spot": _spot,
    "missing": _missing,
    "color": _color,
}


def add_defect(
    image: _Image, rng: np.random.Generator, kind: str | None = None
) -> tuple[_Image, np.ndarray]:
    """Draw one defect on a copy of `image`: (image, mask), mask uint8 (H, W) in {0, 255}.

    `kind=None` picks one of `DEFECTS` at random. The defect covers about 0.5%-8% of the
    image and is redrawn elsewhere until it clearly differs from the surface under it.
    """
    if kind is None:
        kind = str(rng.choice(DEFECTS))
    if kind not in _DRAWERS:
        raise ConfigError(f"unknown defect {kind!r}; choose from {', '.join(DEFECTS)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(
            f"add_defect expects a uint8 (H, W, 3) image, got {image.dtype} {image.shape}"
        )
    best: tuple[float, _Image, np.ndarray] | None = None
    for _ in range(_MAX_TRIES):
        mask, fill = _DRAWERS[kind](image, rng)
        inside = mask > 0
        out = image.copy()
        out[inside] = np.clip(fill[inside], 0, 255).astype(np.uint8)
        area = inside.mean()
        if not area:
            continue
        diff = np.abs(out.astype(np.int16) - image).max(axis=2)[inside]
        change = float(diff.mean())
        # Most of the mask must visibly change: a mark half on a same-coloured background
        # would teach a pixel metric that unchanged pixels are defects.
        covered = float((diff > _MIN_PIXEL_CHANGE).mean())
        if (
            _AREA_RANGE[0] <= area <= _AREA_RANGE[1]
            and change >= _MIN_CONTRAST
            and covered >= _MIN_COVERED
        ):
            return out, mask
        # Keep the most visible attempt in case none passes (e.g. "missing" on a black image).
        if best is None or change > best[0]:
            best = (change, out, mask)
    if best is None:
        raise DataError(f"could not draw a {kind} defect on a {image.shape} image")
    return best[1], best[2]


# ----------------------------------------------------------------------------- data set


def write_dataset(
    root: str | Path,
    classes: Sequence[str] | None = None,
    n_train: int = 20,
    n_test_good: int = 5,
    n_test_defect: int = 5,
    size: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write a synthetic data set in the MVTec-AD layout and return `root`.

    Per class: `train/good/000.png ...` (n_train), `test/good/` (n_test_good),
    `test/<defect>/` with n_test_defect images per kind in `DEFECTS`, and
    `ground_truth/<defect>/<stem>_mask.png` (0/255). Each class draws from its own seeded
    stream, so a class's images do not depend on which other classes are written.
    """
    root = Path(root)
    classes = list(CLASSES if classes is None else classes)
    unknown = [c for c in classes if c not in _MAKERS]
    if unknown:
        raise ConfigError(
            f"unknown synthetic class(es) {', '.join(unknown)}; choose from {', '.join(CLASSES)}"
        )
    if min(n_train, n_test_good, n_test_defect) < 0 or n_train < 1:
        raise ConfigError("n_train must be at least 1 and the test counts at least 0")
    for name in classes:
        folder = root / name
        # Refuse rather than overwrite: stale files from a larger earlier run would stay behind.
        if folder.is_dir() and any(folder.iterdir()):
            raise DataError(
                f"{folder} already exists and is not empty; delete it or choose another root"
            )

    total = len(classes) * (n_train + n_test_good + n_test_defect * len(DEFECTS))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="synthetic data", unit="img")
    try:
        for name in classes:
            _write_class(root / name, name, n_train, n_test_good, n_test_defect, size, seed, bar)
    finally:
        if bar is not None:
            bar.close()
    return root


def _write_class(
    folder: Path,
    name: str,
    n_train: int,
    n_test_good: int,
    n_test_defect: int,
    size: int,
    seed: int,
    bar,
) -> None:
    # crc32, not hash(): str hashes are salted per process and would break determinism.
    key = zlib.crc32(name.encode())

    def stream(part: int) -> np.random.Generator:
        return np.random.default_rng([seed, key, part])

    # Zero-padded to a common width so file names sort in generation order.
    width = max(3, len(str(max(n_train, n_test_good, n_test_defect) - 1)))
    rng = stream(0)
    for i in range(n_train):
        _write_png(folder / "train" / "good" / f"{i:0{width}d}.png", make_normal(name, rng, size))
        _tick(bar)
    rng = stream(1)
    for i in range(n_test_good):
        _write_png(folder / "test" / "good" / f"{i:0{width}d}.png", make_normal(name, rng, size))
        _tick(bar)
    for k, kind in enumerate(DEFECTS):
        rng = stream(2 + k)
        for i in range(n_test_defect):
            image, mask = add_defect(make_normal(name, rng, size), rng, kind)
            stem = f"{i:0{width}d}"
            _write_png(folder / "test" / kind / f"{stem}.png", image)
            _write_png(folder / "ground_truth" / kind / f"{stem}_mask.png", mask)
            _tick(bar)


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    # imencode + write_bytes rather than imwrite: imwrite fails silently on some paths.
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise DataError(f"could not encode {path} as PNG")
    path.write_bytes(buf.tobytes())
