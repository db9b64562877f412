"""The model a worker serves: one loaded model version (model, manifest, device, thresholds)
and the engine that scores its batches.

The worker asks the served model for scores and maps; it does not know which engine (rlr.engines)
computes them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from daemon import logs
from daemon.errors import SettingsError
from daemon.serve.feed import Feed, fit
from daemon.serve.settings import EngineChoice
from rlr.artifact import load_artifact
from rlr.calibrate import threshold_of
from rlr.device import resolve_device
from rlr.engines import create_engine, pick_fastest
from rlr.errors import CacheDamaged, ConfigError
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


class ServedModel:
    """One model version as a worker serves it: its manifest and thresholds, on a device,
    scored by an engine (`RLR_ENGINE`)."""

    def __init__(self, model: RLRModel, manifest: dict, device: torch.device,
                 choice: EngineChoice | None = None, version: str | None = None) -> None:
        choice = choice or EngineChoice.model_construct()  # the defaults, not the environment
        model = model.to(device).eval()
        self.manifest = manifest
        self.device = device
        self.thresholds: dict = dict(manifest.get("thresholds") or {})
        self.version = version or f"sha256:{manifest['sha256'][:12]}"
        self.measured: dict[str, float] = {}  # frames/s per engine, when `auto` measured
        warn = logs.get("served_model").warning
        try:
            if choice.engine == "auto":
                self.engine, self.measured = pick_fastest(
                    model, manifest, device, choice.batch_size, choice.cache,
                    threads=choice.threads, on_damage=choice.engine_cache_damaged, warn=warn)
            else:
                self.engine = create_engine(choice.engine, model, manifest, device,
                                            choice.precision_on(device), choice.cache,
                                            max_batch=max(choice.batch_size, 1),
                                            compile=choice.compile, threads=choice.threads,
                                            on_damage=choice.engine_cache_damaged, warn=warn)
        except CacheDamaged as exc:
            raise SettingsError(f"RLR_ENGINE_CACHE_DAMAGED=refuse: {exc}") from exc
        except ConfigError as exc:
            raise SettingsError(f"RLR_ENGINE={choice.engine}, RLR_PRECISION={choice.precision}: "
                                f"{exc}") from exc
        # Only the torch engine needs the module afterwards; an exported engine's copy of
        # the weights is freed with it.
        self.model: RLRModel | None = getattr(self.engine, "model", None)
        # A compiled model sees a few fixed batch sizes, so it never recompiles mid-line.
        self.feed = Feed(device, max(choice.batch_size, 1), bucketed=choice.compile != "off")

    @property
    def engine_name(self) -> str:
        return f"{self.engine.name}/{self.engine.precision}"

    @classmethod
    def from_file(cls, path: str | Path | None, device: str = "auto",
                  choice: EngineChoice | None = None) -> ServedModel:
        if path is None:
            raise SettingsError("no model: set RLR_MODEL (or --model) to a .rlr artifact "
                                "from `rlrctl train`")
        dev = pick_device(device)
        model, manifest = load_artifact(path, device=dev)
        return cls(model, manifest, dev, choice)

    @property
    def image_size(self) -> int:
        return self.engine.image_size

    @property
    def calibrated(self) -> bool:
        return any(v is not None for v in self.thresholds.values())

    def threshold(self, product_class: str | None) -> float | None:
        return threshold_of(self.thresholds, product_class)

    def infer(self, images: list[np.ndarray | torch.Tensor]) -> Scores:
        """Score a batch of (S, S, 3) uint8 RGB images (or (3, S, S) uint8 tensors decoded on
        the device). Blocking: run it off the event loop.

        Images of another size (decoded for another model of a rollout) are resized."""
        start = time.perf_counter()
        s = self.image_size
        images = [fit(img, s) for img in images]
        n = len(images)
        with torch.inference_mode():
            pred = self.engine.predict(self.feed.stage(images))
            scores = pred.score[:n].float().cpu().numpy()
            maps = pred.anomaly_map[:n].float().cpu().numpy()
        return Scores(scores, maps, (time.perf_counter() - start) * 1000)

    def warm_up(self) -> None:
        """Throw-away batches, so the first real frame does not pay for lazy set-up: one of
        each fixed size when the model is compiled (each size compiles once, here)."""
        s = self.image_size
        for n in self.feed.sizes or (1,):
            self.infer([np.zeros((s, s, 3), np.uint8)] * n)
