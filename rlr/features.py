"""Backbone feature extraction, computed once per image and optionally cached on disk.

The backbone is frozen, so training never needs to run it twice on the same image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from rlr.data import to_tensor

ImageLoader = Callable[[Path, int], np.ndarray]


@torch.inference_mode()
def extract_features(
    backbone: nn.Module,
    paths: Sequence[Path],
    load: ImageLoader,
    image_size: int,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "features",
) -> list[Tensor]:
    """Backbone features of every image, per level: [(N, C_i, H_i, W_i)] on the CPU."""
    backbone = backbone.to(device)
    levels: list[list[Tensor]] = []
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        batch = to_tensor([load(p, image_size) for p in chunk]).to(device)
        feats = backbone(batch)
        if not levels:
            levels = [[] for _ in feats]
        for acc, f in zip(levels, feats, strict=True):
            acc.append(f.float().cpu())
        bar.update(len(chunk))
    bar.close()
    return [torch.cat(acc, 0) for acc in levels]


def cache_key(backbone_desc: dict, paths: Sequence[Path]) -> str:
    """Identifies a feature set: backbone settings + every file's path, size and mtime."""
    h = hashlib.sha256(json.dumps(backbone_desc, sort_keys=True).encode())
    for p in paths:
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def cached_features(
    cache_dir: str | Path | None,
    backbone_desc: dict,
    paths: Sequence[Path],
    compute: Callable[[], list[Tensor]],
) -> tuple[list[Tensor], bool]:
    """Load features from `cache_dir` when an identical set was extracted before, else compute
    and store them. Returns (features, hit)."""
    if cache_dir is None:
        return compute(), False
    file = Path(cache_dir) / f"features-{cache_key(backbone_desc, paths)}.safetensors"
    if file.exists():
        try:
            data = load_file(str(file))
            return [data[f"level{i}"] for i in range(len(data))], True
        except Exception:  # a half-written or foreign file: recompute and overwrite it
            file.unlink(missing_ok=True)
    feats = compute()
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    save_file({f"level{i}": f.contiguous() for i, f in enumerate(feats)}, str(tmp))
    tmp.replace(file)
    return feats, False


def channel_stats(feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Per-level, per-channel mean and std over images and positions."""
    means, stds = [], []
    for f in feats:
        x = f.transpose(0, 1).flatten(1).double()  # (C, N*H*W)
        means.append(x.mean(1).float())
        stds.append(x.std(1).float())
    return means, stds
