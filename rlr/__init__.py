"""rlr: RLR (Learning Unified Reference Representation) unsupervised multi-class anomaly detection.

Public entry points: `create_model(config)`, `load_artifact(path)`, `preset(name)`.
"""

from rlr.config import (
    PRESETS,
    BackboneConfig,
    LevelConfig,
    RLRConfig,
    ScoreConfig,
    TrainConfig,
    preset,
)
from rlr.errors import (
    ArtifactError,
    BackboneError,
    CheckpointError,
    ConfigError,
    DataError,
    RLRError,
)
from rlr.version import __version__

_LAZY = {"Prediction", "RLRModel", "create_model"}


def __getattr__(name: str):
    # torch loads on first use of the model API, so `import rlr.errors` / `rlr.config` stay
    # light (health probes and CLI start-up import them).
    if name in _LAZY:
        from rlr import model

        return getattr(model, name)
    raise AttributeError(f"module 'rlr' has no attribute {name!r}")


def load_artifact(path, device="cpu"):
    """Load a model artifact (see `rlr.artifact.load_artifact`): returns (model, manifest)."""
    from rlr.artifact import load_artifact as _load

    return _load(path, device=device)


__all__ = [
    "PRESETS",
    "ArtifactError",
    "BackboneConfig",
    "BackboneError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LevelConfig",
    "Prediction",
    "RLRConfig",
    "RLRError",
    "RLRModel",
    "ScoreConfig",
    "TrainConfig",
    "__version__",
    "create_model",
    "load_artifact",
    "preset",
]
