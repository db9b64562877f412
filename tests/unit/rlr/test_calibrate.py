"""Thresholds at a false-alarm rate, the pooled fallback and score normalisation."""

import numpy as np
import pytest

from rlr.calibrate import (
    DEFAULT_SLOT,
    calibrate_scores,
    normalized_score,
    threshold_for,
    threshold_of,
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
    assert not cal.warnings


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
