"""Anomaly maps and image scores from (target, reconstruction) feature pairs, batched."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def position_scores(target: Tensor, recon: Tensor) -> Tensor:
    """Per position mean_c((x - x_hat)^2) + (1 - cos(x, x_hat)). (B, C, H, W) -> (B, H, W)."""
    target, recon = target.float(), recon.float()
    mse = (target - recon).pow(2).mean(dim=1)
    cos = F.cosine_similarity(target, recon, dim=1, eps=1e-8)
    return mse + (1.0 - cos)


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> Tensor:
    """1-D normalised Gaussian with scipy.ndimage's support (radius = int(truncate*sigma+0.5))."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def _reflect_index(n: int, radius: int, device: torch.device) -> Tensor:
    # scipy's 'reflect' mode (d c b a | a b c d | d c b a), any radius.
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def gaussian_blur(maps: Tensor, kernel: Tensor) -> Tensor:
    """Separable blur of (B, H, W) maps; borders as scipy.ndimage.gaussian_filter(mode=reflect)."""
    r = kernel.numel() // 2
    if r == 0:
        return maps
    _, h, w = maps.shape
    k = kernel.to(maps.device, maps.dtype)
    x = maps.unsqueeze(1)  # (B, 1, H, W)
    x = x.index_select(3, _reflect_index(w, r, maps.device))
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = x.index_select(2, _reflect_index(h, r, maps.device))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x.squeeze(1)


def anomaly_map(level_pairs: list[tuple[Tensor, Tensor]], size: int,
                stats: list[tuple[Tensor, Tensor]] | None = None) -> Tensor:
    """Upsample each level's position scores to (size, size) and average: (B, size, size).

    `stats`: per level, (mean, std) maps of shape (h, w); each level's scores are standardised
    by them first."""
    maps = []
    for i, (target, recon) in enumerate(level_pairs):
        s = position_scores(target, recon)  # (B, h, w)
        if stats is not None:
            s = (s - stats[i][0]) / stats[i][1]
        maps.append(F.interpolate(s.unsqueeze(1), size=(size, size), mode="bilinear",
                                  align_corners=False))
    return torch.stack(maps, 0).mean(0).squeeze(1)


def image_score(amap: Tensor, topk: int = 0) -> Tensor:
    """(B, H, W) -> (B,): max of the map, or the mean of its `topk` highest pixels."""
    flat = amap.flatten(1)
    if topk <= 0:
        return flat.amax(1)
    k = min(topk, flat.shape[1])
    return flat.topk(k, dim=1).values.mean(1)


class Scorer(nn.Module):
    """Combines level reconstructions into the smoothed pixel map and the image score.

    With `normalize="position"` it holds, per level, the mean and spread of each position's
    score over normal images (`grids`: the levels' (h, w)), shipped with the weights and set
    by `fit_position_stats`; until then they are 0 and 1 (raw scores)."""

    def __init__(self, image_size: int, sigma: float = 4.0, topk: int = 0,
                 normalize: str = "none", grids: tuple[tuple[int, int], ...] = ()) -> None:
        super().__init__()
        self.image_size, self.sigma, self.topk = image_size, sigma, topk
        kernel = gaussian_kernel(sigma) if sigma > 0 else torch.ones(1)
        self.register_buffer("kernel", kernel, persistent=False)
        self.normalize = normalize
        self.levels = len(grids) if normalize == "position" else 0
        for i in range(self.levels):
            self.register_buffer(f"pos_mean{i}", torch.zeros(grids[i]))
            self.register_buffer(f"pos_std{i}", torch.ones(grids[i]))

    def position_stats(self) -> list[tuple[Tensor, Tensor]] | None:
        if not self.levels:
            return None
        return [(getattr(self, f"pos_mean{i}"), getattr(self, f"pos_std{i}"))
                for i in range(self.levels)]

    @torch.no_grad()
    def fit_position_stats(self, level_scores: list[Tensor], floor: float = 0.5) -> None:
        """Set the per-position statistics from normal images' position scores, per level
        [(N, h, w)]. A position's spread is its standard deviation plus `floor` times the
        level's mean spread, so that a position which hardly varies on the normals cannot
        turn a small change into a large score."""
        if len(level_scores) != self.levels:
            raise ValueError(f"position statistics for {len(level_scores)} levels; the scorer "
                             f"has {self.levels} (normalize={self.normalize!r})")
        for i, s in enumerate(level_scores):
            if s.shape[0] < 2:
                raise ValueError("position statistics need at least 2 normal images")
            s = s.float()
            std = s.std(0)
            getattr(self, f"pos_mean{i}").copy_(s.mean(0))
            getattr(self, f"pos_std{i}").copy_(std + floor * std.mean())

    def anomaly_map(self, level_pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
        amap = anomaly_map(level_pairs, self.image_size, self.position_stats())
        return gaussian_blur(amap, self.kernel)

    def image_score(self, amap: Tensor) -> Tensor:
        return image_score(amap, self.topk)

