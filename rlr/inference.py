"""Batched scoring of image files with a trained model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from rlr.data import load_image
from rlr.features import images_to_tensor
from rlr.model import RLRModel


class ScoredImage(NamedTuple):
    path: Path
    image: np.ndarray  # (S, S, 3) uint8, as the model saw it
    score: float
    anomaly_map: np.ndarray  # (S, S) float32


@torch.inference_mode()
def score_paths(
    model: RLRModel,
    paths: Sequence[Path],
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Iterator[ScoredImage]:
    """Yield one `ScoredImage` per path, in order. Images are resized to the model's size."""
    model = model.to(device).eval()
    size = model.image_size
    bar = tqdm(total=len(paths), desc="score", unit="img", disable=not progress, leave=False)
    for start in range(0, len(paths), batch_size):
        chunk = list(paths[start : start + batch_size])
        images = [load_image(p, size) for p in chunk]
        pred = model.predict(images_to_tensor(images).to(device))
        for p, img, s, m in zip(chunk, images, pred.score.cpu(), pred.anomaly_map.cpu(),
                                strict=True):
            yield ScoredImage(Path(p), img, float(s), m.float().numpy())
        bar.update(len(chunk))
    bar.close()
