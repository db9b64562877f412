"""Scoring against independent numpy / scipy definitions."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, zoom

from rlr.scoring import Scorer, gaussian_blur, gaussian_kernel, image_score, position_scores


def test_position_scores_match_numpy_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 4, 5)).astype(np.float32)
    y = rng.normal(size=(2, 6, 4, 5)).astype(np.float32)
    mse = ((x - y) ** 2).mean(1)
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    got = position_scores(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(got, mse + 1 - cos, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sigma,shape", [(4.0, (64, 64)), (1.0, (16, 20)), (4.0, (10, 10)),
                                         (2.5, (33, 7))])
def test_gaussian_blur_equals_scipy(sigma, shape):
    rng = np.random.default_rng(1)
    maps = rng.random((2, *shape)).astype(np.float32)
    got = gaussian_blur(torch.from_numpy(maps), gaussian_kernel(sigma)).numpy()
    for g, m in zip(got, maps, strict=True):
        np.testing.assert_allclose(g, gaussian_filter(m.astype(np.float64), sigma, mode="reflect"),
                                   rtol=1e-5, atol=1e-6)


def test_image_score_max_and_topk():
    amap = torch.zeros(2, 8, 8)
    amap[0, 1, 1] = 5.0
    amap[1, 2, 2], amap[1, 3, 3] = 3.0, 1.0
    assert image_score(amap).tolist() == [5.0, 3.0]
    assert image_score(amap, topk=2).tolist() == [2.5, 2.0]


def test_scorer_upsamples_levels_to_input_size_and_averages():
    torch.manual_seed(0)
    coarse = (torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4))
    fine = (torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8))
    scorer = Scorer(32, sigma=0.0)
    amap = scorer.anomaly_map([coarse, fine])
    assert amap.shape == (1, 32, 32)
    # An anomaly in one coarse cell must light up the matching 8x8 input region most.
    big = (coarse[0].clone(), coarse[0].clone())
    big[1][0, :, 2, 1] += 10.0
    amap = scorer.anomaly_map([big])[0]
    peak = divmod(int(amap.argmax()), 32)
    assert 16 <= peak[0] < 24 and 8 <= peak[1] < 16
    # bilinear (align_corners=False) agrees with scipy's zoom on the interior
    s = position_scores(*fine)[0].numpy()
    ref = zoom(s.astype(np.float64), 4, order=1, grid_mode=True, mode="nearest")
    got = scorer.anomaly_map([fine, fine])[0].numpy()
    np.testing.assert_allclose(got[4:-4, 4:-4], ref[4:-4, 4:-4], rtol=1e-4, atol=1e-5)


def test_position_normalisation_standardises_each_level_before_averaging():
    torch.manual_seed(1)
    grids = ((4, 4), (2, 2))
    scorer = Scorer(8, sigma=0.0, normalize="position", grids=grids)
    normals = [torch.rand(20, *g) for g in grids]
    scorer.fit_position_stats(normals)
    for i, s in enumerate(normals):
        std = s.std(0)
        assert torch.allclose(getattr(scorer, f"pos_mean{i}"), s.mean(0))
        assert torch.allclose(getattr(scorer, f"pos_std{i}"), std + 0.5 * std.mean())
    pairs = [(torch.randn(2, 3, *g), torch.randn(2, 3, *g)) for g in grids]
    want = torch.stack([
        torch.nn.functional.interpolate(
            ((position_scores(*p) - m) / sd).unsqueeze(1), size=(8, 8), mode="bilinear",
            align_corners=False)
        for p, (m, sd) in zip(pairs, scorer.position_stats(), strict=True)]).mean(0).squeeze(1)
    assert torch.allclose(scorer.anomaly_map(pairs), want, atol=1e-6)
    with pytest.raises(ValueError, match="for 1 levels; the scorer has 2"):
        scorer.fit_position_stats(normals[:1])
    assert Scorer(8).position_stats() is None  # normalize="none": raw scores, no buffers
    assert not [k for k in Scorer(8, grids=grids).state_dict() if k.startswith("pos_")]


def test_a_position_hard_on_every_normal_no_longer_outranks_a_real_defect():
    # An edge that every normal image reconstructs badly vs. a defect of half its raw error.
    rng = torch.Generator().manual_seed(0)
    normals = 0.1 * torch.rand(50, 8, 8, generator=rng)
    normals[:, 0, 0] += 2.0
    scorer = Scorer(8, sigma=0.0, normalize="position", grids=((8, 8),))
    scorer.fit_position_stats([normals])
    target = torch.full((1, 4, 8, 8), 3.0)
    recon = target.clone()  # same direction everywhere: the score is the mse alone
    recon[0, :, 0, 0] = 3.0 - 2.0**0.5  # the edge's usual error: mse 2.0
    recon[0, :, 5, 5] = 2.0  # a defect: mse 1.0
    raw = Scorer(8, sigma=0.0).anomaly_map([(target, recon)])[0]
    norm = scorer.anomaly_map([(target, recon)])[0]
    assert divmod(int(raw.argmax()), 8) == (0, 0)
    assert divmod(int(norm.argmax()), 8) == (5, 5)
