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


def anomaly_map(level_pairs: list[tuple[Tensor, Tensor]], size: int) -> Tensor:
    """Upsample each level's position scores to (size, size) and average: (B, size, size)."""
    maps = []
    for target, recon in level_pairs:
        s = position_scores(target, recon).unsqueeze(1)  # (B, 1, h, w)
        maps.append(F.interpolate(s, size=(size, size), mode="bilinear", align_corners=False))
    return torch.stack(maps, 0).mean(0).squeeze(1)


def image_score(amap: Tensor, topk: int = 0) -> Tensor:
    """(B, H, W) -> (B,): max of the map, or the mean of its `topk` highest pixels."""
    flat = amap.flatten(1)
    if topk <= 0:
        return flat.amax(1)
    k = min(topk, flat.shape[1])
    return flat.topk(k, dim=1).values.mean(1)


class Scorer(nn.Module):
    """Combines level reconstructions into the smoothed pixel map and the image score."""

    def __init__(self, image_size: int, sigma: float = 4.0, topk: int = 0) -> None:
        super().__init__()
        self.image_size, self.sigma, self.topk = image_size, sigma, topk
        kernel = gaussian_kernel(sigma) if sigma > 0 else torch.ones(1)
        self.register_buffer("kernel", kernel, persistent=False)

    def anomaly_map(self, level_pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
        return gaussian_blur(anomaly_map(level_pairs, self.image_size), self.kernel)

    def image_score(self, amap: Tensor) -> Tensor:
        return image_score(amap, self.topk)

