"""Metrics against scikit-learn and a slow, obviously-correct AU-PRO reference."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from rlr.errors import ConfigError, DataError
from rlr.metrics import (
    PixelMetricAccumulator,
    image_metrics,
    mean_over_classes,
    pixel_metrics,
    table_rows,
)

# Binned pixel metrics on continuous scores (documented in rlr.metrics). Observed at 100k bins:
# <= 5e-5 for AP and AU-PRO, ~1e-6 for AUROC.
BIN_TOL = 1e-4


def sklearn_metrics(scores, labels):
    """Reference AUROC, AP, F1-max, and its threshold (the lowest one if several tie)."""
    p, r, t = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)[:-1]
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)[0]  # thresholds ascend, so this is the lowest
    return {"auroc": roc_auc_score(labels, scores), "ap": average_precision_score(labels, scores),
            "f1_max": f1[best], "f1_threshold": t[best]}


def blob_masks(rng, n, size, max_blobs=3):
    """(n, size, size) bool masks with 0..max_blobs random discs each, some of them touching."""
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), bool)
    for m in masks:
        for _ in range(rng.integers(0, max_blobs + 1)):
            cy, cx = rng.integers(0, size, 2)
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(1, max(2, size // 6)) ** 2
    return masks


def slow_aupro(maps, masks, max_fpr=0.3):
    """Every distinct score is a threshold; FPR and PRO straight from their definitions."""
    regions = []
    for amap, mask in zip(maps, masks, strict=True):
        lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [amap[lab == k] for k in range(1, n + 1)]
    normal = maps[~masks]
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        xs.append(np.mean(normal >= t))
        ys.append(np.mean([np.mean(r >= t) for r in regions]))
    # Integrate the piecewise-linear curve, clipping each segment to [0, max_fpr].
    area = 0.0
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:], strict=True):
        if x1 <= x0 or x0 >= max_fpr:
            continue
        xe = min(x1, max_fpr)
        area += (xe - x0) * (y0 + y0 + (y1 - y0) * (xe - x0) / (x1 - x0)) / 2
    return area / max_fpr


def random_case(seed, n=20, size=32, integer=False):
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng, n, size)
    masks[0, 3:6, 3:6] = True  # at least one defect
    if integer:  # heavy ties: eight distinct values
        maps = np.clip(rng.integers(0, 6, masks.shape) + 2 * masks, 0, 7).astype(np.float32)
    else:
        maps = (rng.normal(size=masks.shape) + 1.2 * masks).astype(np.float32)
    return maps, masks


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["float", "ties", "few_ties"])
def test_image_metrics_equal_sklearn(seed, kind):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[:2] = [True, False]
    if kind == "float":
        scores = rng.normal(size=n) + labels
    elif kind == "ties":
        scores = rng.integers(0, 4, n) + labels * rng.integers(0, 2, n)
    else:
        scores = np.round(rng.normal(size=n) + labels, 1)
    got, ref = image_metrics(scores, labels), sklearn_metrics(scores, labels)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_image_auroc_of_inverted_scores_is_one_minus():
    rng = np.random.default_rng(1)
    labels = rng.random(200) < 0.3
    scores = rng.integers(0, 10, 200) + 2 * labels
    a, b = image_metrics(scores, labels)["auroc"], image_metrics(-scores, labels)["auroc"]
    assert a + b == pytest.approx(1.0, abs=1e-12)


def test_image_metrics_with_one_class_are_nan_not_a_crash():
    no_anomaly = image_metrics([0.1, 0.5, 0.3], [0, 0, 0])
    assert all(math.isnan(v) for v in no_anomaly.values())
    only_anomaly = image_metrics(torch.tensor([0.1, 0.5]), torch.tensor([True, True]))
    assert math.isnan(only_anomaly["auroc"])
    assert only_anomaly["ap"] == 1.0 and only_anomaly["f1_max"] == 1.0
    assert only_anomaly["f1_threshold"] == pytest.approx(0.1)
    with pytest.raises(DataError, match="labels"):
        image_metrics([0.1, 0.2], [1])


@pytest.mark.parametrize("seed", range(3))
def test_pixel_metrics_match_sklearn_within_bin_tolerance(seed):
    maps, masks = random_case(seed)
    got = pixel_metrics(maps, masks)
    ref = sklearn_metrics(maps.ravel(), masks.ravel())
    for key in ("auroc", "ap", "f1_max"):
        assert got[key] == pytest.approx(ref[key], abs=BIN_TOL), key


def test_pixel_metrics_with_ties_equal_sklearn_exactly():
    # Distinct integer values fall into distinct bins, so binning changes nothing.
    maps, masks = random_case(3, integer=True)
    got = pixel_metrics(maps, masks)
    ref = sklearn_metrics(maps.ravel(), masks.ravel())
    for key in ("auroc", "ap", "f1_max"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    assert got["aupro"] == pytest.approx(slow_aupro(maps, masks), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_aupro_matches_slow_reference(seed):
    maps, masks = random_case(seed, n=6, size=24)
    got = pixel_metrics(maps, masks)["aupro"]
    assert got == pytest.approx(slow_aupro(maps, masks), abs=BIN_TOL)
    assert pixel_metrics(maps, masks, max_fpr=0.05)["aupro"] == pytest.approx(
        slow_aupro(maps, masks, max_fpr=0.05), abs=BIN_TOL)


def test_aupro_counts_diagonally_touching_pixels_as_one_region():
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 1, 1] = True
    masks[0, [2, 2, 3], [2, 3, 3]] = True  # touches (1, 1) only diagonally
    maps = np.zeros((1, 8, 8), np.float32)
    maps[0, 1, 1] = 1.0
    # With 8-connectivity this is one 4-pixel region and 1/4 of it is found before any false
    # positive, so PRO is 0.25. With 4-connectivity it would be two regions and PRO would be 0.5.
    assert pixel_metrics(maps, masks)["aupro"] == pytest.approx(0.25 + 0.75 * 0.15, abs=1e-12)


def test_perfect_constant_and_inverted_maps():
    maps, masks = random_case(5)
    perfect = pixel_metrics(masks.astype(np.float32), masks)
    assert perfect == pytest.approx({"auroc": 1.0, "ap": 1.0, "f1_max": 1.0, "aupro": 1.0},
                                    abs=1e-12)
    const = pixel_metrics(np.zeros_like(maps), masks)
    assert const["auroc"] == 0.5
    assert const["ap"] == pytest.approx(masks.mean())
    assert const["aupro"] == pytest.approx(0.15)  # the diagonal, integrated to 0.3, divided by 0.3
    a, b = pixel_metrics(maps, masks)["auroc"], pixel_metrics(-maps, masks)["auroc"]
    assert a + b == pytest.approx(1.0, abs=BIN_TOL)


def test_accumulator_in_batches_equals_one_shot():
    maps, masks = random_case(6)
    one_shot = pixel_metrics(maps, masks, n_bins=5000)
    acc = PixelMetricAccumulator(maps.min(), maps.max(), n_bins=5000)
    acc.update(torch.from_numpy(maps[:3]), torch.from_numpy(masks[:3]))
    acc.update(maps[3], masks[3])
    acc.update(maps[4:], masks[4:].astype(np.uint8))
    assert acc.compute() == pytest.approx(one_shot, abs=1e-12)
    assert acc.n_clipped == 0


def test_accumulator_counts_scores_outside_its_range_and_ties_them_to_the_edges():
    maps, masks = random_case(7)
    acc = PixelMetricAccumulator(-1.0, 1.0)
    acc.update(maps, masks)
    assert acc.n_clipped == np.count_nonzero((maps < -1) | (maps > 1))
    clipped = pixel_metrics(np.clip(maps, -1, 1), masks)
    assert acc.compute() == pytest.approx(clipped, abs=BIN_TOL)


def test_pixel_metrics_degenerate_and_bad_input():
    assert all(math.isnan(v) for v in pixel_metrics(np.ones((2, 4, 4)),
                                                    np.zeros((2, 4, 4), bool)).values())
    all_defect = pixel_metrics(np.ones((1, 4, 4)), np.ones((1, 4, 4), bool))
    assert math.isnan(all_defect["auroc"]) and math.isnan(all_defect["aupro"])
    with pytest.raises(DataError, match="NaN"):
        pixel_metrics(np.full((1, 4, 4), np.nan), np.zeros((1, 4, 4), bool))
    with pytest.raises(DataError, match="masks"):
        pixel_metrics(np.ones((2, 4, 4)), np.zeros((2, 4, 5), bool))
    with pytest.raises(ConfigError, match="max_fpr"):
        PixelMetricAccumulator(0.0, 1.0).compute(max_fpr=0.0)
    with pytest.raises(ConfigError, match="n_bins"):
        PixelMetricAccumulator(0.0, 1.0, n_bins=0)


def test_mean_over_classes_ignores_nan_and_table_rows_end_with_it():
    per_class = {"bottle": {"auroc": 0.9, "aupro": float("nan")},
                 "cable": {"auroc": 0.7, "aupro": 0.8},
                 "good_only": {"auroc": float("nan"), "aupro": float("nan")}}
    mean = mean_over_classes(per_class)
    assert mean == pytest.approx({"auroc": 0.8, "aupro": 0.8})
    assert math.isnan(mean_over_classes({"a": {"ap": float("nan")}})["ap"])
    rows = table_rows(per_class)
    assert rows[0] == ["class", "auroc", "aupro"]
    assert [r[0] for r in rows[1:]] == ["bottle", "cable", "good_only", "mean"]
    assert rows[-1][1:] == pytest.approx([0.8, 0.8])
