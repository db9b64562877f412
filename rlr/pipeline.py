"""End-to-end training on a folder of normal images: check data, cache features, fit.

Everything that can fail on bad input (paths, images, classes) fails here before any
backbone or training work starts. `rlrctl train` and a training job (`daemon.jobs`) both
train a `TrainingRun` (rlr.config) with `load_training_data` and `train_on_checked`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlr.config import RLRConfig, TrainingRun
from rlr.data import Sample, load_image, split_validation
from rlr.datasets import Dataset, check_dataset, load_dataset
from rlr.device import resolve_device
from rlr.errors import ConfigError
from rlr.features import cached_features, channel_stats, extract_features
from rlr.model import RLRModel, create_model
from rlr.train import TrainResult, fit


@dataclass
class TrainedModel:
    model: RLRModel
    class_names: list[str]
    result: TrainResult
    data_summary: dict[str, Any]

    def training_summary(self) -> dict[str, Any]:
        return {"data": self.data_summary, "result": self.result.summary(),
                "history": self.result.history}


def load_training_data(run: TrainingRun, config: RLRConfig, progress: bool = True) -> Dataset:
    """The data set `run` names, every image opened: a bad path or file fails here, in
    seconds, before any backbone work."""
    dataset = load_dataset(run.dataset, run.data, list(run.classes or ()) or None,
                           seed=config.train.seed)
    check_dataset(dataset, progress=progress)
    return dataset


def train_on_dataset(config: RLRConfig, dataset: Dataset, **options: Any) -> TrainedModel:
    """Train on a loaded data set's normal training images (MVTec-AD, VisA, ELPV, folder).

    The data set's own validation split is used when it has one (ELPV); otherwise one is
    carved from the training images. `options` as for `train_on_samples`.
    """
    check_dataset(dataset, progress=options.get("progress", True))
    return train_on_checked(config, dataset, **options)


def train_on_checked(config: RLRConfig, dataset: Dataset, **options: Any) -> TrainedModel:
    """`train_on_dataset` for a data set already checked (`load_training_data`)."""
    return train_on_samples(config, dataset.train, data_root=str(dataset.root.resolve()),
                            validation=dataset.validation, kind=dataset.kind, **options)


def sample_features(
    model: RLRModel,
    samples: Sequence[Sample],
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = "auto",
    progress: bool = True,
    name: str = "train",
) -> list[torch.Tensor]:
    """The model's backbone features of `samples`, per level [(N, C_i, H_i, W_i)], read from
    `cache_dir` when the same backbone saw the same files before (training, baselines)."""
    config = model.config
    desc = {**config.to_dict()["backbone"], "source": model.backbone.weight_source}
    paths = [s.path for s in samples]
    feats, _ = cached_features(
        cache_dir, desc, paths,
        lambda: extract_features(model.backbone, paths, load_image, config.backbone.image_size,
                                 batch_size=config.train.batch_size,
                                 device=resolve_device(device), progress=progress,
                                 desc=f"{name} features"),
    )
    return feats


def train_on_samples(
    config: RLRConfig,
    samples: Sequence[Sample],
    device: str | None = "auto",
    cache_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    data_root: str | None = None,
    validation: Sequence[Sample] | None = None,
    kind: str = "folder",
) -> TrainedModel:
    """Train on normal `samples`; `validation=None` carves a validation split from them."""
    dev = resolve_device(device)
    if validation is None:
        train_s, val_s = split_validation(list(samples), config.train.val_fraction,
                                          config.train.seed)
    else:
        train_s, val_s = list(samples), list(validation)
    if config.score.normalize != "none" and len(val_s) < 2:
        raise ConfigError(f"score normalize={config.score.normalize!r} is fitted on the "
                          f"validation normals and there are {len(val_s)}; give more images "
                          "or a larger val_fraction, or set normalize 'none'")
    model = create_model(config)

    def features_of(subset: list[Sample], name: str) -> list[torch.Tensor]:
        return sample_features(model, subset, cache_dir, dev, progress=progress, name=name)

    t0 = time.perf_counter()
    train_feats = features_of(train_s, "train")
    val_feats = features_of(val_s, "validation") if val_s else None
    feature_seconds = time.perf_counter() - t0

    if config.feature_norm == "channel":
        model.reconstructor.set_feature_stats(*channel_stats(train_feats))
    result = fit(model, train_feats, val_feats, config.train, device=dev,
                 checkpoint=checkpoint, resume=resume, progress=progress, on_epoch=on_epoch)
    model.to(dev).eval()
    if val_feats is not None:
        model.fit_score_normalization(val_feats)  # a no-op unless config.score.normalize

    class_names = sorted({s.class_name for s in [*train_s, *val_s]})
    counts = {c: {"train": sum(s.class_name == c for s in train_s),
                  "validation": sum(s.class_name == c for s in val_s)} for c in class_names}
    summary = {"kind": kind, "root": data_root, "images": counts, "n_train": len(train_s),
               "n_validation": len(val_s), "feature_seconds": round(feature_seconds, 2),
               "device": str(dev)}
    return TrainedModel(model, class_names, result, summary)
