"""Alarm thresholds for a trained model from its held-out normal images.

Shared by `rlrctl calibrate` and the training-job runner, so a model calibrated by a job gets
exactly the thresholds `rlrctl calibrate` would give it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rlr.calibrate import Calibration, calibrate_scores
from rlr.data import Sample, split_validation
from rlr.datasets import Dataset
from rlr.model import RLRModel


def validation_normals(ds: Dataset, train_config: Mapping[str, Any]) -> list[Sample]:
    """The data set's own validation normals (ELPV), else the split of `train/good` that
    training held out (same `val_fraction` and `seed`), so none of them was trained on."""
    if ds.validation is not None:
        return list(ds.validation)
    return split_validation(list(ds.train), train_config["val_fraction"], train_config["seed"])[1]


def calibrate_model(model: RLRModel, normals: Sequence[Sample], far: float, batch_size: int,
                    device: torch.device) -> Calibration:
    """Score `normals` and set per-class (and pooled "default") thresholds at `far`."""
    from rlr.evaluate import score_samples

    scores, _ = score_samples(model, normals, batch_size, device)
    by_class: dict[str, list[float]] = {}
    for s, v in zip(normals, scores, strict=True):
        by_class.setdefault(s.class_name, []).append(float(v))
    return calibrate_scores(by_class, far)
