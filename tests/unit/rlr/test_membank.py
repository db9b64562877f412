"""The memory-bank baseline: coreset spread, nearest-neighbour scores, shapes, chunking."""

import torch
from torch import nn

from rlr.membank import (
    MemoryBank,
    fit_memory_bank,
    greedy_coreset,
    nearest_distance,
    patch_features,
)
from rlr.scoring import Scorer


def test_coreset_takes_one_point_from_each_cluster():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    # 500 points round (0, 0), 5 round each other centre: random picks would miss the small ones
    sizes = [500, 5, 5, 5]
    x = torch.cat([c + 0.1 * torch.randn(n, 2, generator=g) for c, n in zip(centres, sizes,
                                                                             strict=True)])
    idx = greedy_coreset(x, 4, proj_dim=0)
    nearest_centre = torch.cdist(x[idx], centres).argmin(1)
    assert sorted(nearest_centre.tolist()) == [0, 1, 2, 3]


def test_coreset_through_a_random_projection_still_finds_every_cluster():
    g = torch.Generator().manual_seed(1)
    centres = 10 * torch.randn(20, 64, generator=g)
    sizes = [1000] + [5] * 19
    x = torch.cat([c + 0.1 * torch.randn(n, 64, generator=g) for c, n in zip(centres, sizes,
                                                                              strict=True)])
    idx = greedy_coreset(x, 20, proj_dim=16)
    assert len(set(idx.tolist())) == 20
    # every point lies within its own cluster's spread of some chosen point
    assert nearest_distance(x, x[idx]).max() < 3.0
    rand = torch.randperm(x.shape[0], generator=g)[:20]
    assert nearest_distance(x, x[rand]).max() > 10.0


def test_nearest_distance_matches_full_matrix_at_any_chunk():
    g = torch.Generator().manual_seed(2)
    q, bank = torch.randn(103, 8, generator=g), torch.randn(17, 8, generator=g)
    want = torch.cdist(q, bank).amin(1)
    for chunk in (1, 10, 103, 1000):
        torch.testing.assert_close(nearest_distance(q, bank, chunk), want)


def test_chunking_bounds_the_distance_matrix(monkeypatch):
    seen = []
    real = torch.cdist

    def spy(a, b):
        seen.append(a.shape[0] * b.shape[0])
        return real(a, b)

    monkeypatch.setattr(torch, "cdist", spy)
    nearest_distance(torch.randn(1000, 4), torch.randn(50, 4), chunk=64)
    assert max(seen) <= 64 * 50


def test_patch_features_pool_and_concatenate_levels():
    f0, f1 = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)
    p = patch_features([f0, f1])
    assert p.shape == (2, 8, 8, 8)
    # a 3x3 mean at an inner position
    torch.testing.assert_close(p[:, :3, 4, 4], f0[:, :, 3:6, 3:6].mean((-1, -2)))
    means, stds = [torch.full((3,), 1.0), torch.zeros(5)], [torch.full((3,), 2.0), torch.ones(5)]
    torch.testing.assert_close(patch_features([f0, f1], means, stds)[:, :3], (p[:, :3] - 1) / 2)


class _Identity(nn.Module):
    """A 'backbone' whose two levels are the image itself and its 2x downsampling."""

    channels = (3, 3)

    def forward(self, images):
        return [images, nn.functional.avg_pool2d(images, 2)]


def test_a_patch_unlike_the_normals_scores_higher_and_shapes_hold():
    g = torch.Generator().manual_seed(3)
    normals = 0.5 + 0.01 * torch.randn(6, 3, 16, 16, generator=g)
    backbone = _Identity()
    mb = fit_memory_bank(backbone, backbone(normals), Scorer(16, sigma=1.0), fraction=0.1)
    assert isinstance(mb, MemoryBank) and mb.bank.shape == (round(0.1 * 6 * 256), 6)
    test = 0.5 + 0.01 * torch.randn(2, 3, 16, 16, generator=g)
    test[1, :, 2:5, 10:13] = 1.0  # a bright defect in the second image
    pred = mb.predict(test)
    assert pred.score.shape == (2,) and pred.anomaly_map.shape == (2, 16, 16)
    assert pred.score[1] > 5 * pred.score[0]
    amap = pred.anomaly_map[1]
    assert amap[2:5, 10:13].mean() > amap[10:, :6].mean() * 5
