"""Position embedding, window masks and the fast path against their plain definitions."""

import math

import pytest
import torch

from rlr.config import LevelConfig, default_window, max_window
from rlr.errors import ConfigError
from rlr.layers import sincos_pos_embed, window_index, window_mask
from rlr.model import RLRLevel, RLRReconstructor


def test_pos_embed_matches_formula_elementwise():
    h, w, d = 3, 5, 16
    emb = sincos_pos_embed(h, w, d)
    half = d // 2
    assert emb.shape == (h * w, d)
    for hh in range(h):
        for ww in range(w):
            tok = emb[hh * w + ww]  # row-major (h, w)
            for k in range(half // 2):
                div = math.exp(-2 * k * math.log(1e4) / half)
                assert tok[2 * k] == pytest.approx(math.sin(ww * div), abs=1e-6)
                assert tok[2 * k + 1] == pytest.approx(math.cos(ww * div), abs=1e-6)
                assert tok[half + 2 * k] == pytest.approx(math.sin(hh * div), abs=1e-6)
                assert tok[half + 2 * k + 1] == pytest.approx(math.cos(hh * div), abs=1e-6)


def _brute_force_mask(h, w, window):
    r = window // 2
    m = torch.zeros(h * w, h * w, dtype=torch.bool)
    for qh in range(h):
        for qw in range(w):
            for kh in range(max(qh - r, 0), min(qh + r, h - 1) + 1):
                for kw in range(max(qw - r, 0), min(qw + r, w - 1) + 1):
                    m[qh * w + qw, kh * w + kw] = True
    return m


@pytest.mark.parametrize("h,w,window", [(16, 16, 5), (32, 32, 7), (8, 8, 3), (7, 9, 5),
                                        (12, 5, 3), (4, 4, 1), (64, 64, 11)])
def test_window_mask_and_gather_table_match_brute_force(h, w, window):
    if h * w > 1024:  # brute force is quadratic in Python; sample rows instead
        ref_rows = torch.randperm(h * w)[:50]
        full = window_mask(h, w, window)
        r = window // 2
        for q in ref_rows.tolist():
            qh, qw = divmod(q, w)
            expect = torch.zeros(h * w, dtype=torch.bool)
            for kh in range(max(qh - r, 0), min(qh + r, h - 1) + 1):
                for kw in range(max(qw - r, 0), min(qw + r, w - 1) + 1):
                    expect[kh * w + kw] = True
            assert torch.equal(full[q], expect)
        return
    expect = _brute_force_mask(h, w, window)
    assert torch.equal(window_mask(h, w, window), expect)
    idx, valid = window_index(h, w, window)
    gathered = torch.zeros(h * w, h * w, dtype=torch.bool)
    for q in range(h * w):
        gathered[q, idx[q][valid[q]]] = True
        assert valid[q].sum() == expect[q].sum()  # no key twice
    assert torch.equal(gathered, expect)


def test_default_windows_follow_the_paper_and_stay_valid():
    assert [default_window(g) for g in (16, 32, 64)] == [5, 7, 11]
    for g in range(2, 130):
        win = default_window(g)
        assert win % 2 == 1 and 1 <= win <= max_window(g)
    assert default_window(8) < default_window(24) < default_window(48) < default_window(128)


def test_window_that_leaves_mlka_nothing_is_refused():
    with pytest.raises(ConfigError, match="window"):
        RLRLevel(8, (4, 4), LevelConfig(16, 1, 2, window=5))


@pytest.mark.parametrize("grids,windows", [(((16, 16), (8, 8)), (None, None)),
                                           (((12, 10), (6, 5)), (5, 3)),
                                           (((32, 32), (16, 16)), (7, 5))])
def test_fast_path_equals_dense_path(grids, windows):
    torch.manual_seed(0)
    chans = (24, 40)
    levels = tuple(LevelConfig(32, 2, 4, window=w) for w in windows)
    rec = RLRReconstructor(chans, grids, levels).eval()
    feats = [torch.randn(3, c, *g) * 3 for c, g in zip(chans, grids, strict=True)]
    with torch.no_grad():
        dense = rec(feats, dense=True)
        fast = rec(feats)
        fast_again = rec(feats)  # served from the reference cache
    for d, f, f2 in zip(dense, fast, fast_again, strict=True):
        rel = (d.recon - f.recon).abs().max() / d.recon.abs().max()
        assert rel <= 1e-5
        assert torch.equal(f.recon, f2.recon)


def test_fast_path_gradients_match_dense_path():
    torch.manual_seed(1)
    rec = RLRReconstructor((16,), ((8, 8),), (LevelConfig(16, 1, 2),))
    feats = [torch.randn(2, 16, 8, 8)]
    grads = []
    for dense in (True, False):
        rec.zero_grad()
        rec(feats, dense=dense)[0].recon.square().sum().backward()
        grads.append(rec.levels[0].reference.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_reference_cache_is_invalidated_by_weight_changes():
    torch.manual_seed(2)
    rec = RLRReconstructor((16,), ((8, 8),), (LevelConfig(16, 1, 2),)).eval()
    feats = [torch.randn(2, 16, 8, 8)]
    with torch.no_grad():
        before = rec(feats)[0].recon
        rec.levels[0].reference.add_(1.0)  # what an optimizer step does
        after = rec(feats)[0].recon
        dense = rec(feats, dense=True)[0].recon
    assert not torch.allclose(before, after)
    assert torch.allclose(after, dense, atol=1e-5)
