"""The model a worker serves: load an artifact, run batched inference, look up thresholds.

The worker asks an engine for scores and maps; it does not know which runtime computes them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from daemon.errors import SettingsError
from rlr.artifact import load_artifact
from rlr.calibrate import threshold_of
from rlr.data import resize, to_tensor
from rlr.device import resolve_device
from rlr.errors import ConfigError
from rlr.model import RLRModel


class Scores(NamedTuple):
    scores: np.ndarray  # (B,) float32
    maps: np.ndarray  # (B, S, S) float32
    infer_ms: float  # wall time of the whole batch


def pick_device(device: str) -> torch.device:
    """`RLR_DEVICE` as a torch device; the rule is `rlr.device.resolve_device`'s."""
    try:
        return resolve_device(device)
    except ConfigError as exc:
        raise SettingsError(f"RLR_DEVICE: {exc}") from exc


class Engine:
    def __init__(self, model: RLRModel, manifest: dict, device: torch.device,
                 precision: str = "auto", version: str | None = None) -> None:
        self.model = model.to(device).eval()
        self.manifest = manifest
        self.device = device
        self.bf16 = device.type == "cuda" and precision in ("auto", "bf16")
        if precision == "bf16" and device.type != "cuda":
            raise SettingsError("RLR_PRECISION=bf16 needs a CUDA device; use auto or fp32 on CPU")
        self.thresholds: dict = dict(manifest.get("thresholds") or {})
        self.version = version or f"sha256:{manifest['sha256'][:12]}"

    @classmethod
    def from_file(cls, path: str | Path | None, device: str = "auto",
                  precision: str = "auto") -> Engine:
        if path is None:
            raise SettingsError("no model: set RLR_MODEL (or --model) to a .rlr artifact "
                                "from `rlrctl train`")
        dev = pick_device(device)
        model, manifest = load_artifact(path, device=dev)
        return cls(model, manifest, dev, precision)

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def calibrated(self) -> bool:
        return any(v is not None for v in self.thresholds.values())

    def threshold(self, product_class: str | None) -> float | None:
        return threshold_of(self.thresholds, product_class)

    def infer(self, images: list[np.ndarray]) -> Scores:
        """Score a batch of (S, S, 3) uint8 RGB images. Blocking: run it off the event loop.

        Images of another size (decoded for another model of a rollout) are resized."""
        start = time.perf_counter()
        s = self.image_size
        images = [img if img.shape[:2] == (s, s) else resize(img, s) for img in images]
        x = to_tensor(images).to(self.device, non_blocking=True)
        pred = self.model.predict(x, bf16=self.bf16)
        scores = pred.score.float().cpu().numpy()
        maps = pred.anomaly_map.float().cpu().numpy()
        return Scores(scores, maps, (time.perf_counter() - start) * 1000)

    def warm_up(self) -> None:
        """One throw-away batch, so the first real frame does not pay for lazy set-up."""
        s = self.image_size
        self.infer([np.zeros((s, s, 3), np.uint8)])
