"""A memory-bank baseline of the PatchCore kind, on the same backbone features as RLR.

Each position's feature is averaged over its 3x3 neighbourhood per level, the levels are
resized to the finest grid and concatenated; the bank holds a greedy k-center coreset of the
training normals' patches. A patch scores its distance to the nearest bank entry; the map is
upsampled and smoothed by the same `Scorer` as RLR's, and the image score is its maximum.
It exists to tell how much RLR's reconstruction adds over plain nearest-neighbour distance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlr.model import Prediction
from rlr.scoring import Scorer, gaussian_blur


def patch_features(feats: list[Tensor], means: list[Tensor] | None = None,
                   stds: list[Tensor] | None = None) -> Tensor:
    """Locally aware patch features: [(B, C_i, H_i, W_i)] -> (B, sum C_i, H_0, W_0).

    With `means`/`stds` each level is standardised per channel first (RLR's `feature_norm`).
    """
    grid = feats[0].shape[-2:]
    out = []
    for i, f in enumerate(feats):
        f = f.float()
        if means is not None and stds is not None:
            f = (f - means[i].view(1, -1, 1, 1)) / stds[i].clamp_min(1e-6).view(1, -1, 1, 1)
        f = F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False)
        if f.shape[-2:] != grid:
            f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
        out.append(f)
    return torch.cat(out, 1)


def greedy_coreset(x: Tensor, n: int, proj_dim: int = 128, seed: int = 0) -> Tensor:
    """Indices of `n` rows of `x` (N, C) chosen by greedy k-center (farthest point first).

    Distances are taken after a Gaussian random projection to `proj_dim` dimensions, which
    keeps them close (Johnson-Lindenstrauss) at a fraction of the cost.
    """
    n_rows = x.shape[0]
    n = max(1, min(n, n_rows))
    g = torch.Generator().manual_seed(seed)
    x = x.float()
    if proj_dim and proj_dim < x.shape[1]:
        proj = torch.randn(x.shape[1], proj_dim, generator=g) / proj_dim**0.5
        x = x @ proj.to(x.device)  # (N, proj_dim)
    first = int(torch.randint(n_rows, (1,), generator=g))
    chosen = torch.empty(n, dtype=torch.long)
    chosen[0] = first
    sq = x.pow(2).sum(1)  # (N,)

    def dist_to(i: int) -> Tensor:  # squared distances to row i, as one matrix-vector product
        return (sq - 2 * (x @ x[i]) + sq[i]).clamp_min(0)

    nearest = dist_to(first)  # (N,) squared distance to the chosen set
    for k in range(1, n):
        i = int(nearest.argmax())
        chosen[k] = i
        torch.minimum(nearest, dist_to(i), out=nearest)
    return chosen


def nearest_distance(query: Tensor, bank: Tensor, chunk: int = 4096) -> Tensor:
    """Euclidean distance from each row of `query` (Q, C) to its nearest row of `bank` (M, C).

    Queries go `chunk` rows at a time, so at most a (chunk, M) distance matrix exists at once.
    """
    out = torch.empty(query.shape[0], device=query.device)
    for start in range(0, query.shape[0], chunk):
        q = query[start : start + chunk].float()
        out[start : start + chunk] = torch.cdist(q, bank.float()).amin(1)
    return out


class MemoryBank(nn.Module):
    """Backbone + patch memory bank + RLR's scorer. `predict(images)` -> `Prediction`."""

    def __init__(self, backbone: nn.Module, bank: Tensor, scorer: Scorer,
                 means: list[Tensor] | None = None, stds: list[Tensor] | None = None,
                 chunk: int = 4096) -> None:
        super().__init__()
        self.backbone = backbone
        self.scorer = scorer
        self.chunk = chunk
        self.register_buffer("bank", bank.float())  # (M, C)
        self.norm = means is not None and stds is not None
        for i in range(len(means or [])):
            self.register_buffer(f"mean{i}", means[i].float())
            self.register_buffer(f"std{i}", stds[i].float())

    @property
    def image_size(self) -> int:
        return self.scorer.image_size

    def _stats(self) -> tuple[list[Tensor] | None, list[Tensor] | None]:
        if not self.norm:
            return None, None
        n = len(self.backbone.channels)
        return ([getattr(self, f"mean{i}") for i in range(n)],
                [getattr(self, f"std{i}") for i in range(n)])

    def patches(self, feats: list[Tensor]) -> Tensor:
        return patch_features(feats, *self._stats())

    def predict_features(self, feats: list[Tensor]) -> Prediction:
        p = self.patches(feats)  # (B, C, H, W)
        b, c, h, w = p.shape
        d = nearest_distance(p.permute(0, 2, 3, 1).reshape(-1, c), self.bank, self.chunk)
        s = self.image_size
        amap = F.interpolate(d.view(b, 1, h, w), size=(s, s), mode="bilinear",
                             align_corners=False).squeeze(1)  # (B, S, S)
        amap = gaussian_blur(amap, self.scorer.kernel)
        return Prediction(self.scorer.image_score(amap), amap)

    @torch.inference_mode()
    def predict(self, images: Tensor) -> Prediction:
        self.eval()
        return self.predict_features(self.backbone(images))


def fit_memory_bank(backbone: nn.Module, train_feats: list[Tensor], scorer: Scorer,
                    fraction: float = 0.01, means: list[Tensor] | None = None,
                    stds: list[Tensor] | None = None, proj_dim: int = 128, seed: int = 0,
                    batch_size: int = 64) -> MemoryBank:
    """A `MemoryBank` over the coreset (`fraction` of all patches) of `train_feats`, the
    backbone's per-level features of the training normals ([(N, C_i, H_i, W_i)])."""
    n = train_feats[0].shape[0]
    patches = torch.cat([
        patch_features([f[i : i + batch_size] for f in train_feats], means, stds)
        .permute(0, 2, 3, 1).flatten(0, 2)
        for i in range(0, n, batch_size)
    ])  # (N*H*W, C)
    idx = greedy_coreset(patches, round(fraction * patches.shape[0]), proj_dim, seed)
    return MemoryBank(backbone, patches[idx].clone(), scorer, means, stds)
