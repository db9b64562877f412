"""Alarm thresholds from normal images at a chosen false-alarm rate.

Each class gets the score that a fraction `far` of its normal validation images exceed; the
"default" slot (used when a frame's class is unknown) is computed the same way over all
classes pooled. With n normal images, rates below 1/n cannot be measured: the threshold is
then the highest normal score, and a warning says so.

What rate such a threshold gives on normals it has not seen does not depend on the scores'
distribution, only on how many normals it came from: a threshold at the (n - j)-th lowest of n
normal scores lets through a fraction of unseen normals distributed as Beta(j + 1, n - j), with
mean (j + 1) / (n + 1) (`unseen_far`). With 100 normals and a 1 % target that fraction lies
between 0.4 % and 4.7 % nine times in ten; `normals_needed` says how many pin it within a factor
of two of the target, and calibration warns when there are fewer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlr.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from rlr.data import Sample
    from rlr.datasets import Dataset
    from rlr.model import RLRModel

DEFAULT_SLOT = "default"  # thresholds slot for frames whose class is not known
DECILES = tuple(i / 10 for i in range(1, 10))
UNSEEN_LEVEL = 0.9  # the interval `unseen_far` reports holds the unseen rate this often


@dataclass
class Calibration:
    far: float
    thresholds: dict[str, float]  # class (and "default") -> score threshold
    counts: dict[str, int]  # normal images used per class
    observed_far: dict[str, float]  # fraction of those images above the threshold
    warnings: list[str] = field(default_factory=list)
    # class (and "default") -> the deciles of its normal scores: what a camera's live score
    # distribution is compared with to notice drift (daemon: camera health)
    quantiles: dict[str, list[float]] = field(default_factory=dict)
    # class (and "default") -> [mean, low, high]: the false-alarm rate the threshold gives on
    # unseen normals, its mean and central UNSEEN_LEVEL interval (`unseen_far`)
    unseen_far: dict[str, list[float]] = field(default_factory=dict)

    def manifest_fields(self) -> dict:
        return {"thresholds": dict(self.thresholds),
                "metrics": {"calibration": {"far": self.far, "counts": self.counts,
                                            "observed_far": self.observed_far,
                                            "unseen_far": self.unseen_far,
                                            "unseen_level": UNSEEN_LEVEL,
                                            "quantiles": self.quantiles}}}


def threshold_for(scores: Sequence[float] | np.ndarray, far: float) -> float:
    """Smallest observed score such that at most a fraction `far` of `scores` lies above it."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.size == 0:
        raise ConfigError("no normal scores to calibrate on; give at least one normal image")
    allowed = math.floor(far * s.size + 1e-9)  # how many normals may raise an alarm
    return float(s[s.size - 1 - allowed])


def unseen_far(n: int, far: float, level: float = UNSEEN_LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the false-alarm rate on unseen normals of a threshold that
    `threshold_for` set from `n` normal scores at `far`, and its central `level` interval.

    Exact for any continuous score distribution, as long as the unseen normals are like the
    calibration ones (same camera, same product, same model)."""
    from scipy.stats import beta

    if n < 1:
        raise ConfigError("no normal scores to calibrate on; give at least one normal image")
    j = math.floor(far * n + 1e-9)  # calibration normals above the threshold
    a, b = j + 1, n - j
    lo, hi = beta.ppf([(1 - level) / 2, (1 + level) / 2], a, b)
    return a / (n + 1), float(lo), float(hi)


def normals_needed(far: float, factor: float = 2.0, level: float = UNSEEN_LEVEL) -> int:
    """The fewest normal images from which a threshold at `far` gives, with probability
    `level`, a rate on unseen normals within [far / factor, far * factor] (for that many
    images and every larger count: the probability jumps with the count's rounding)."""
    from scipy.stats import beta

    if not 0.0 < far < 1.0 or factor <= 1.0:
        raise ConfigError(f"false-alarm rate {far} must be in (0, 1) and factor {factor} > 1")
    n = np.arange(1, math.ceil(40 / far) + 1)
    j = np.floor(far * n + 1e-9)
    a, b = j + 1, n - j
    ok = beta.cdf(far * factor, a, b) - beta.cdf(far / factor, a, b) >= level
    misses = np.flatnonzero(~ok)
    if not misses.size:
        return int(n[0])
    return int(n[min(misses[-1] + 1, n.size - 1)])  # the count after the last miss


def calibrate_scores(normal_scores: Mapping[str, Sequence[float]], far: float) -> Calibration:
    """Per-class thresholds plus the pooled "default" one from normal scores."""
    if not 0.0 <= far < 1.0:
        raise ConfigError(f"false-alarm rate {far} must be in [0, 1), e.g. 0.005 for 0.5%")
    if not normal_scores:
        raise ConfigError("no classes to calibrate; give normal images of at least one class")
    thresholds, counts, observed, warnings, quantiles, unseen = {}, {}, {}, [], {}, {}
    needed: int | None = None
    pooled = {DEFAULT_SLOT: np.concatenate([np.asarray(v, float) for v in normal_scores.values()])}
    for name, scores in {**normal_scores, **pooled}.items():
        s = np.asarray(scores, dtype=np.float64)
        t = threshold_for(s, far)
        thresholds[name], counts[name] = t, int(s.size)
        observed[name] = float((s > t).mean())
        quantiles[name] = [float(q) for q in np.quantile(s, DECILES)]
        mean, lo, hi = unseen_far(s.size, far)
        unseen[name] = [mean, lo, hi]
        if far == 0 or far / 2 <= lo <= hi <= far * 2:
            continue
        if needed is None:  # the same for every class: computed once, when first wanted
            needed = normals_needed(far)
        spread = (f"on unseen normals it will raise alarms on {lo:.2%} to {hi:.2%} of them "
                  f"({UNSEEN_LEVEL:.0%} interval; {mean:.2%} on average). About {needed} normal "
                  f"images pin the rate within a factor of two of {far:g}.")
        if s.size < 1 / far:
            warnings.append(
                f"{name}: only {s.size} normal images, so a false-alarm rate of {far:g} cannot be "
                f"measured (the finest is {1 / s.size:.3g}); the threshold is the highest normal "
                f"score, and {spread}"
            )
        else:
            warnings.append(f"{name}: {s.size} normal images; {spread}")
    return Calibration(far, thresholds, counts, observed, warnings, quantiles, unseen)


def normalized_score(score: float | np.ndarray, threshold: float) -> float | np.ndarray:
    """Score divided by its threshold: 1.0 is exactly at the alarm threshold."""
    if not threshold > 0:
        raise ConfigError(f"threshold {threshold} must be positive to normalise scores")
    return score / threshold


def threshold_of(thresholds: Mapping[str, float | None], class_name: str | None) -> float | None:
    """The class's threshold, or the global "default" one when the class is unknown/uncalibrated."""
    if class_name is not None and thresholds.get(class_name) is not None:
        return thresholds[class_name]
    return thresholds.get(DEFAULT_SLOT)


def validation_normals(ds: Dataset, train_config: Mapping[str, Any]) -> list[Sample]:
    """The data set's own validation normals (ELPV), else the split of `train/good` that
    training held out (same `val_fraction` and `seed`), so none of them was trained on."""
    from rlr.data import split_validation

    if ds.validation is not None:
        return list(ds.validation)
    return split_validation(list(ds.train), train_config["val_fraction"], train_config["seed"])[1]


def calibration_normals(ds: Dataset, manifest: Mapping[str, Any]) -> tuple[list[Sample], str]:
    """The normals to calibrate `manifest`'s model on, and where they come from.

    A folder collected for calibration is used whole; only the folder the model was trained
    on (the manifest's training data root) is split, to its validation part, since the rest
    was trained on. A model whose training folder is not recorded gets the split too."""
    if ds.validation is not None:
        return list(ds.validation), f"the validation normals of {ds.root}"
    trained_on = ((manifest.get("training") or {}).get("data") or {}).get("root")
    if trained_on is not None and not _same_folder(trained_on, ds.root):
        return list(ds.train), f"every normal of {ds.root} (the model trained on {trained_on})"
    why = "the model trained on it" if trained_on else "the training folder is not recorded"
    split = validation_normals(ds, manifest["config"]["train"])
    return split, f"the validation split of {ds.root} ({why}; the rest was trained on)"


def _same_folder(trained_on: str | Path, root: str | Path) -> bool:
    """Whether `root` is the recorded training folder. A relative record (written from
    another working directory) matches any folder it ends: splitting is the safe side."""
    recorded, here = Path(trained_on), Path(root).resolve()
    if not recorded.is_absolute() and here.parts[-len(recorded.parts):] == recorded.parts:
        return True
    try:
        return recorded.resolve() == here or recorded.samefile(here)
    except OSError:  # the training folder is gone (another machine): not this one
        return False


def calibrate_model(model: RLRModel, normals: Sequence[Sample], far: float, batch_size: int = 8,
                    device: str | torch.device = "cpu") -> Calibration:
    """Score `normals` and set per-class (and pooled "default") thresholds at `far`.

    `rlrctl calibrate` and training jobs both call this, so a model calibrated by a job gets
    exactly the thresholds the command would give it."""
    from rlr.inference import score_samples

    scores, _ = score_samples(model, normals, batch_size, device)
    by_class: dict[str, list[float]] = {}
    for s, v in zip(normals, scores, strict=True):
        by_class.setdefault(s.class_name, []).append(float(v))
    return calibrate_scores(by_class, far)
