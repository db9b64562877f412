"""Anomaly detection metrics: image- and pixel-level AUROC, AP, F1-max, and pixel AU-PRO.

Image metrics are exact. Ties count as in scikit-learn (one curve point per distinct score), so
the results equal `roc_auc_score` / `average_precision_score` up to float rounding.

Pixel metrics are binned. Sorting all ~110 M pixels of the MVTec AD test set exactly is slow and
needs GBs, so scores are quantised into `n_bins` equal-width bins over [lo, hi] and only per-bin
counts are kept: two int64 histograms and one float64 histogram, 2.4 MB at 100k bins. The results
are the *exact* metrics of the quantised scores: pixels that share a bin count as ties, handled
the way sklearn handles ties. So maps whose distinct values fall into distinct bins (for example
integer-valued maps) give sklearn's numbers exactly. For continuous maps the error is about the
fraction of (defect, normal) pixel pairs that share a bin. At 100k bins that is at most 5e-5
for AP and AU-PRO (1e-6 for AUROC) on the tests' random 20k-pixel maps; the tests allow 1e-4.
The bins are equal-width, so a few extreme outliers that stretch [lo, hi] push the rest of the
scores into fewer bins.

AU-PRO follows MVTec AD's reference evaluation. A region is one 8-connected component
(`np.ones((3, 3))`) of one image's defect mask. PRO(t) is the mean over all regions of the fraction
of the region's pixels scoring >= t. FPR(t) is the fraction of all normal pixels scoring >= t.
The PRO-vs-FPR curve starts at (0, 0), is interpolated linearly at FPR = max_fpr,
trapezoid-integrated over [0, max_fpr] and divided by max_fpr, so a perfect detector scores 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from rlr.errors import ConfigError, DataError

IMAGE_KEYS = ("auroc", "ap", "f1_max", "f1_threshold")
PIXEL_KEYS = ("auroc", "ap", "f1_max", "aupro")
NAN = float("nan")

# 8-connectivity within each image and no connectivity along axis 0 (the image index), so a
# single ndimage.label call labels a whole batch without merging regions across images.
_REGION_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_REGION_STRUCTURE[1] = True
# About 2 M pixels per chunk keeps the float64/int64 temporaries at a few tens of MB.
_CHUNK_PIXELS = 1 << 21


def _as_numpy(x: Any) -> np.ndarray:
    # Accepts tensors (including CUDA tensors and ones that require grad) as well as array-likes.
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    # Written out: np.trapezoid needs numpy >= 2, and np.trapz is deprecated there.
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _summarize(fps: np.ndarray, tps: np.ndarray) -> tuple[float, float, float, int]:
    """Returns AUROC, AP, F1-max and the index where F1-max is reached.

    Inputs are cumulative negative and positive counts at decreasing thresholds; the last entry
    counts every sample. Every entry must add at least one sample.
    """
    n_neg, n_pos = int(fps[-1]), int(tps[-1])
    if n_pos == 0:
        return NAN, NAN, NAN, -1
    fps, tps = fps.astype(np.float64), tps.astype(np.float64)
    auroc = NAN
    if n_neg > 0:
        auroc = _trapezoid(np.r_[0.0, tps / n_pos], np.r_[0.0, fps / n_neg])
    # sklearn's step-wise AP: each threshold's recall gain times its precision, no interpolation.
    ap = float(np.sum(np.diff(np.r_[0.0, tps]) / n_pos * (tps / (tps + fps))))
    # F1 = 2PR / (P + R) = 2 TP / (TP + FP + #positives). This form keeps exact ties equal in
    # float, so the tie-break below is deterministic. Among tied thresholds we take the lowest,
    # like np.argmax over sklearn's ascending `precision_recall_curve` thresholds.
    f1 = 2.0 * tps / (tps + fps + n_pos)
    best = f1.size - 1 - int(np.argmax(f1[::-1]))
    return auroc, ap, float(f1[best]), best


def image_metrics(scores: Any, labels: Any) -> dict[str, float]:
    """Exact image-level `auroc`, `ap`, `f1_max`, and `f1_threshold`.

    Higher scores are more anomalous; labels are nonzero for anomalous images, and a score >=
    `f1_threshold` counts as anomalous. Undefined metrics are NaN: all of them when no image is
    anomalous, and AUROC also when no image is normal.
    """
    s = _as_numpy(scores).astype(np.float64).ravel()
    y = _as_numpy(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise DataError(f"{s.size} scores but {y.size} labels: pass one label per image")
    if not np.isfinite(s).all():
        raise DataError("image scores contain NaN or inf: check the model output before scoring")
    if s.size == 0:
        return dict.fromkeys(IMAGE_KEYS, NAN)
    order = np.argsort(s, kind="stable")[::-1]  # descending, as sklearn's _binary_clf_curve
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    auroc, ap, f1, best = _summarize(last + 1 - tps, tps)
    threshold = float(s[last[best]]) if best >= 0 else NAN
    return {"auroc": auroc, "ap": ap, "f1_max": f1, "f1_threshold": threshold}


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under the polyline (0, 0), (x_i, y_i)... over [0, x_max], divided by x_max.

    x must be non-decreasing.
    """
    x, y = np.r_[0.0, x], np.r_[0.0, y]
    k = int(np.searchsorted(x, x_max, side="right"))  # x[:k] <= x_max < x[k:]
    if k < x.size:  # end the curve exactly at x_max
        y_end = y[k - 1] + (y[k] - y[k - 1]) * (x_max - x[k - 1]) / (x[k] - x[k - 1])
        x, y = np.r_[x[:k], x_max], np.r_[y[:k], y_end]
    return _trapezoid(y, x) / x_max


class PixelMetricAccumulator:
    """Streaming pixel AUROC, AP, F1-max and AU-PRO over `n_bins` equal-width bins on [lo, hi].

    The score range must be known up front, e.g. from validation maps or from a first pass over
    the test maps (which is what `pixel_metrics` does). Scores outside the range go into the edge
    bins, so they tie with lo or hi. `n_clipped` counts them, so a caller can tell that the range
    was too narrow. Memory does not grow with the number of images: the state is three histograms
    and a region count.
    """

    def __init__(self, lo: float, hi: float, n_bins: int = 100_000) -> None:
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ConfigError(f"score range [{lo}, {hi}] must be finite with lo <= hi")
        if n_bins < 1:
            raise ConfigError(f"n_bins={n_bins} must be >= 1 (100_000 is a good default)")
        self.lo, self.hi, self.n_bins = lo, hi, int(n_bins)
        # When lo == hi (for example, constant maps), every score lands in bin 0.
        self._scale = self.n_bins / (hi - lo) if hi > lo else 0.0
        self.neg = np.zeros(self.n_bins, np.int64)  # normal pixels per bin
        self.pos = np.zeros(self.n_bins, np.int64)  # defect pixels per bin
        # Per bin, the sum over defect pixels of 1 / (size of the pixel's region). Its cumulative
        # sum divided by n_regions is PRO. This is MVTec's per-pixel weight, and it replaces one
        # histogram per region.
        self.pro = np.zeros(self.n_bins, np.float64)
        self.n_regions = 0
        self.n_clipped = 0

    def update(self, maps: Any, masks: Any) -> None:
        """Add maps (B, H, W) or (H, W) and same-shape defect masks (nonzero = defect)."""
        maps, masks = _as_numpy(maps), _as_numpy(masks)
        if maps.ndim == 2:
            maps, masks = maps[None], masks[None]
        if maps.ndim != 3 or maps.shape != masks.shape:
            raise DataError(f"maps {maps.shape} and masks {masks.shape} must both be (B, H, W)")
        if maps.size == 0:
            return
        per = max(1, _CHUNK_PIXELS // maps[0].size)
        for i in range(0, len(maps), per):
            self._add(maps[i : i + per], masks[i : i + per].astype(bool, copy=False))

    def _add(self, maps: np.ndarray, masks: np.ndarray) -> None:
        lo, hi = float(maps.min()), float(maps.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise DataError("anomaly maps contain NaN or inf: check the model output")
        if lo < self.lo or hi > self.hi:
            self.n_clipped += int(np.count_nonzero((maps < self.lo) | (maps > self.hi)))
        # The bin index is computed in float64 and clipped before the cast to int, because casting
        # a far out-of-range float to int64 is undefined.
        x = np.subtract(maps, self.lo, dtype=np.float64)
        x *= self._scale
        np.clip(x, 0, self.n_bins - 1, out=x)
        b = x.astype(np.int64)  # (B, H, W)
        counts = np.bincount((b + self.n_bins * masks).ravel(), minlength=2 * self.n_bins)
        self.neg += counts[: self.n_bins]
        self.pos += counts[self.n_bins :]
        if masks.any():
            regions, n = ndimage.label(masks, structure=_REGION_STRUCTURE)
            sizes = np.bincount(regions.ravel())
            weights = 1.0 / sizes[regions[masks]]
            self.pro += np.bincount(b[masks], weights=weights, minlength=self.n_bins)
            self.n_regions += n

    def compute(self, max_fpr: float = 0.3) -> dict[str, float]:
        """Returns `auroc`, `ap`, `f1_max` and `aupro` (up to FPR `max_fpr`) for all data so far.

        Undefined metrics are NaN.
        """
        if not 0.0 < max_fpr <= 1.0:
            raise ConfigError(f"max_fpr={max_fpr} must be in (0, 1]; MVTec uses 0.3")
        # Thresholds run from the top bin down. Empty bins add no point to the curve.
        neg, pos = self.neg[::-1], self.pos[::-1]
        keep = (neg + pos) > 0
        if not keep.any():
            return dict.fromkeys(PIXEL_KEYS, NAN)
        fps, tps = np.cumsum(neg)[keep], np.cumsum(pos)[keep]
        auroc, ap, f1, _ = _summarize(fps, tps)
        aupro = NAN
        if self.n_regions > 0 and fps[-1] > 0:
            # The clip removes float summation overshoot, as MVTec's reference code does.
            pro = np.minimum(np.cumsum(self.pro[::-1])[keep] / self.n_regions, 1.0)
            aupro = _area_up_to(fps / fps[-1], pro, max_fpr)
        return {"auroc": auroc, "ap": ap, "f1_max": f1, "aupro": aupro}


def pixel_metrics(
    maps: Any, masks: Any, max_fpr: float = 0.3, n_bins: int = 100_000
) -> dict[str, float]:
    """Pixel `auroc`, `ap`, `f1_max` and `aupro` of (N, H, W) maps against (N, H, W) masks.

    Scores are binned over the maps' own [min, max] (one pass for the range, then one to count
    the bins). The module docstring describes the approximation. Undefined metrics are NaN.
    """
    maps, masks = _as_numpy(maps), _as_numpy(masks)
    if maps.shape != masks.shape or maps.ndim not in (2, 3):
        raise DataError(f"maps {maps.shape} and masks {masks.shape} must both be (N, H, W)")
    if maps.size == 0:
        return dict.fromkeys(PIXEL_KEYS, NAN)
    lo, hi = float(maps.min()), float(maps.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise DataError("anomaly maps contain NaN or inf: check the model output")
    acc = PixelMetricAccumulator(lo, hi, n_bins)
    acc.update(maps, masks)
    return acc.compute(max_fpr)


def mean_over_classes(per_class: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over classes, ignoring NaN; a metric NaN for every class stays NaN."""
    out: dict[str, float] = {}
    for key in _metric_keys(per_class):
        vals = np.array([row[key] for row in per_class.values() if key in row], np.float64)
        vals = vals[~np.isnan(vals)]
        out[key] = float(vals.mean()) if vals.size else NAN
    return out


def table_rows(
    per_class: Mapping[str, Mapping[str, float]], keys: Iterable[str] | None = None
) -> list[list[Any]]:
    """Rows for printing a per-class table.

    The first row is the header, then one row per class (in the mapping's order), then a "mean"
    row. Values stay floats; formatting is left to the caller.
    """
    keys = list(keys) if keys is not None else _metric_keys(per_class)
    mean = mean_over_classes(per_class)
    rows: list[list[Any]] = [["class", *keys]]
    rows += [[name, *(float(m.get(k, NAN)) for k in keys)] for name, m in per_class.items()]
    rows.append(["mean", *(mean.get(k, NAN) for k in keys)])
    return rows


def _metric_keys(per_class: Mapping[str, Mapping[str, float]]) -> list[str]:
    # Keys in the order they first appear, so tables keep the caller's column order.
    return list(dict.fromkeys(k for row in per_class.values() for k in row))
