"""Batched scoring of image files with a trained model: the one scoring loop of the library.

`score_paths` (files, e.g. `rlrctl score`) and `score_samples` (data-set samples: evaluation,
calibration, report overlays) share `_score_batches`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from rlr.data import Sample, load_image, to_tensor
from rlr.device import resolve_device
from rlr.engines.base import Engine
from rlr.model import Prediction, RLRModel

Predictor = RLRModel | Engine  # the model itself, or a serving engine of it (rlr.engines)


class ScoredImage(NamedTuple):
    path: Path
    image: np.ndarray  # (S, S, 3) uint8, as the model saw it
    score: float
    anomaly_map: np.ndarray  # (S, S) float32


def _ready(model: Predictor, device: torch.device) -> Predictor:
    return model.to(device).eval() if isinstance(model, RLRModel) else model


def _score_batches(
    model: Predictor, paths: Sequence[Path], batch_size: int, device: torch.device,
) -> Iterator[tuple[list[Path], list[np.ndarray], Prediction]]:
    size = model.image_size
    for start in range(0, len(paths), batch_size):
        chunk = [Path(p) for p in paths[start : start + batch_size]]
        images = [load_image(p, size) for p in chunk]
        yield chunk, images, model.predict(to_tensor(images).to(device))


@torch.inference_mode()
def score_paths(
    model: Predictor,
    paths: Sequence[Path],
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Iterator[ScoredImage]:
    """Yield one `ScoredImage` per path, in order. Images are resized to the model's size."""
    dev = resolve_device(device)
    model = _ready(model, dev)
    bar = tqdm(total=len(paths), desc="score", unit="img", disable=not progress, leave=False)
    for chunk, images, pred in _score_batches(model, paths, batch_size, dev):
        for p, img, s, m in zip(chunk, images, pred.score.float().cpu(),
                                pred.anomaly_map.float().cpu(), strict=True):
            yield ScoredImage(p, img, float(s), m.numpy())
        bar.update(len(chunk))
    bar.close()


@torch.inference_mode()
def score_samples(
    model: Predictor, samples: Sequence[Sample], batch_size: int = 8,
    device: str | torch.device = "cpu", keep_maps: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Image scores (N,) and, when asked, float16 anomaly maps (N, S, S)."""
    dev = resolve_device(device)
    model = _ready(model, dev)
    scores, maps = [], []
    for chunk, _, pred in _score_batches(model, [s.path for s in samples], batch_size, dev):
        scores.append(pred.score.float().cpu().numpy())
        if keep_maps:
            maps.append(pred.anomaly_map.float().cpu().numpy().astype(np.float16))
        if on_batch is not None:
            on_batch(len(chunk))
    if not scores:
        return np.zeros(0, np.float32), (np.zeros((0, 0, 0), np.float16) if keep_maps else None)
    return np.concatenate(scores), (np.concatenate(maps) if keep_maps else None)
