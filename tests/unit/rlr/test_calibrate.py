"""Thresholds at a false-alarm rate, the pooled fallback and score normalisation."""

import numpy as np
import pytest

from rlr.calibrate import (
    DEFAULT_SLOT,
    calibrate_scores,
    normalized_score,
    normals_needed,
    threshold_for,
    threshold_of,
    unseen_far,
)
from rlr.errors import ConfigError


@pytest.mark.parametrize("far", [0.0, 0.005, 0.01, 0.05, 0.2])
def test_threshold_keeps_the_false_alarm_rate_at_or_below_target(far):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=1000)
    t = threshold_for(scores, far)
    observed = (scores > t).mean()
    assert observed <= far
    # and it is the lowest such threshold among the observed scores
    lower = np.sort(scores)[np.sort(scores) < t]
    if lower.size:
        assert (scores > lower[-1]).mean() > far


def test_far_zero_means_the_highest_normal_score():
    assert threshold_for([1.0, 3.0, 2.0], 0.0) == 3.0


def test_per_class_and_pooled_default_thresholds():
    rng = np.random.default_rng(1)
    scores = {"a": rng.normal(0, 1, 400), "b": rng.normal(10, 1, 400)}
    cal = calibrate_scores(scores, 0.01)
    assert cal.thresholds["b"] > cal.thresholds["a"] + 5
    assert cal.counts == {"a": 400, "b": 400, DEFAULT_SLOT: 800}
    pooled = np.concatenate(list(scores.values()))
    assert cal.thresholds[DEFAULT_SLOT] == threshold_for(pooled, 0.01)
    assert all(v <= 0.01 for v in cal.observed_far.values())
    assert not [w for w in cal.warnings if "cannot be measured" in w]  # 400 measure 1 %


def test_too_few_normals_warns_with_the_finest_measurable_rate():
    cal = calibrate_scores({"a": [0.1, 0.2, 0.3]}, 0.005)
    assert cal.thresholds["a"] == 0.3
    assert any("only 3 normal images" in w for w in cal.warnings)


def test_unknown_class_falls_back_to_default_and_normalisation():
    thresholds = {"a": 2.0, "b": None, DEFAULT_SLOT: 4.0}
    assert threshold_of(thresholds, "a") == 2.0
    assert threshold_of(thresholds, "b") == 4.0  # uncalibrated class
    assert threshold_of(thresholds, "zzz") == 4.0
    assert threshold_of(thresholds, None) == 4.0
    assert normalized_score(3.0, 2.0) == 1.5
    assert normalized_score(2.0, 2.0) == 1.0


def test_bad_rates_and_empty_inputs_are_refused():
    with pytest.raises(ConfigError, match="false-alarm rate"):
        calibrate_scores({"a": [1.0]}, 1.5)
    with pytest.raises(ConfigError, match="no normal scores"):
        threshold_for([], 0.01)
    with pytest.raises(ConfigError, match="positive"):
        normalized_score(1.0, 0.0)


@pytest.mark.parametrize(("n", "far"), [(50, 0.01), (300, 0.01), (40, 0.1)])
def test_unseen_far_matches_thresholds_drawn_from_many_calibration_sets(n, far):
    # The rate a threshold gives on unseen normals, over 4,000 calibration sets of n normal
    # scores: its mean and the share inside the 90 % interval are what unseen_far says.
    from scipy.stats import norm

    rng = np.random.default_rng(3)
    rates = np.array([norm.sf(threshold_for(rng.normal(size=n), far)) for _ in range(4000)])
    mean, lo, hi = unseen_far(n, far)
    assert abs(rates.mean() - mean) < 0.1 * mean
    assert 0.87 < ((rates >= lo) & (rates <= hi)).mean() < 0.93
    assert lo < far * 1.5 and hi > far


def test_normals_needed_is_where_the_unseen_rate_stays_within_a_factor_of_two():
    from scipy.stats import beta

    def inside(n, far):
        j = int(np.floor(far * n + 1e-9))
        return beta.cdf(2 * far, j + 1, n - j) - beta.cdf(far / 2, j + 1, n - j)

    n = normals_needed(0.01)
    assert 200 < n < 2000
    assert all(inside(m, 0.01) >= 0.9 for m in range(n, n + 400))
    assert inside(n - 1, 0.01) < 0.9
    assert normals_needed(0.05) < n
    with pytest.raises(ConfigError, match="false-alarm rate"):
        normals_needed(0.0)


def test_calibration_reports_the_unseen_rate_and_warns_when_it_is_loose():
    rng = np.random.default_rng(2)
    cal = calibrate_scores({"poly": rng.normal(size=87), "big": rng.normal(size=5000)}, 0.01)
    mean, lo, hi = cal.unseen_far["poly"]
    assert (mean, lo, hi) == pytest.approx(unseen_far(87, 0.01))
    assert lo < 0.005 and hi > 0.02  # 87 normals cannot pin 1 %
    poly = [w for w in cal.warnings if w.startswith("poly:")]
    assert poly and f"{lo:.2%} to {hi:.2%}" in poly[0] and str(normals_needed(0.01)) in poly[0]
    assert not [w for w in cal.warnings if w.startswith("big:")]  # 5,000 normals pin it
    assert cal.manifest_fields()["metrics"]["calibration"]["unseen_far"]["big"][1] > 0.005


def _folder(root, n: int = 20):
    from rlr.data import Sample
    from rlr.datasets import Dataset

    train = tuple(Sample(root / c / "train" / "good" / f"{i}.png", c) for c in ("a", "b")
                  for i in range(n))
    return Dataset("folder", root, ("a", "b"), train, None, (), False)


def test_a_calibration_folder_is_used_whole_and_the_training_folder_split(tmp_path,
                                                                           monkeypatch):
    from rlr.calibrate import calibration_normals

    (tmp_path / "data").mkdir()
    (tmp_path / "calib").mkdir()
    manifest = {"config": {"train": {"val_fraction": 0.1, "seed": 0}},
                "training": {"data": {"root": str(tmp_path / "data")}}}
    whole, where = calibration_normals(_folder(tmp_path / "calib"), manifest)
    assert len(whole) == 40 and where.startswith(f"every normal of {tmp_path / 'calib'}")
    split, where = calibration_normals(_folder(tmp_path / "data"), manifest)
    assert 0 < len(split) < 10 and "validation split" in where and "trained on it" in where
    monkeypatch.chdir(tmp_path)  # a root recorded relative to another working directory
    relative = {**manifest, "training": {"data": {"root": "data"}}}
    assert len(calibration_normals(_folder(tmp_path / "data"), relative)[0]) == len(split)
    unknown = {**manifest, "training": {}}  # not recorded: the safe side, the split
    split, where = calibration_normals(_folder(tmp_path / "calib"), unknown)
    assert len(split) < 10 and "not recorded" in where
