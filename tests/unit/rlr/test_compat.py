"""Official RLR checkpoints: name mapping, exact round trip, an independent re-implementation of
the authors' forward, and refusal of mismatched or unsafe files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rlr import compat
from rlr.config import BackboneConfig, preset
from rlr.errors import CheckpointError
from rlr.model import create_model


def _config(**level_changes):
    cfg = preset("tiny", feature_norm="none")
    cfg = cfg.replace(backbone=BackboneConfig(cfg.backbone.name, cfg.backbone.out_indices, 64,
                                              weights="none"))
    if level_changes:
        cfg = cfg.replace(levels=tuple(lv.__class__(**{**lv.__dict__, **level_changes})
                                       for lv in cfg.levels))
    return cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model(_config())
    with torch.no_grad():  # no zero biases or unit norms left: every tensor must map correctly
        for p in m.reconstructor.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "best.pth"
    levels = compat.rlr_to_official(model)
    torch.save({"state_dict": levels, "epoch": np.int64(10), "best_img_auc": np.float64(0.97),
                "best_pix_auc": np.float32(0.5)}, path)
    return path


def _features(model, batch=2):
    g = torch.Generator().manual_seed(3)
    return [torch.randn(batch, c, h, w, generator=g)
            for c, (h, w) in zip(model.backbone.channels, model.backbone.grid_sizes, strict=True)]


def test_export_uses_the_official_names_and_shapes(model):
    level = compat.rlr_to_official(model)[0]
    c, (h, w), d = model.backbone.channels[0], model.backbone.grid_sizes[0], 32
    assert level["ref_mca"].shape == (1, h * w, c)
    assert level["embedding.project_embedding.project.weight"].shape == (d, c, 1)
    assert level["ref_mca_embedding.project_embedding.project.bias"].shape == (d,)
    assert level["encoder.encode_layers.0.mca.in_proj_weight"].shape == (3 * d, d)
    assert level["encoder.encode_layers.0.nsa.out_proj.weight"].shape == (d, d)
    assert level["encoder.encode_layers.0.ffn.fc1.weight"].shape == (4 * d, d)
    assert level["projection.weight"].shape == (c, d)
    assert "encoder.norm.bias" in level and "pos_embed" not in str(list(level))


def test_round_trip_through_an_official_file(model, checkpoint):
    imported, meta = compat.import_official(checkpoint, _config())
    assert meta == {"epoch": 10, "best_img_auc": 0.97, "best_pix_auc": 0.5}
    assert type(meta["epoch"]) is int and type(meta["best_img_auc"]) is float
    assert not imported.training
    feats = _features(model)
    with torch.no_grad():
        pairs = zip(model.reconstructor(feats), imported.reconstructor(feats), strict=True)
        for ours, theirs in pairs:
            assert torch.equal(ours.recon, theirs.recon)
    for level in imported.reconstructor.levels:  # official models read raw features
        assert torch.all(level.feat_mean == 0) and torch.all(level.feat_std == 1)


def _official_level(c, n, d, n_layers, seed=0):
    """A level state dict built by hand with the authors' names and shapes."""
    g = torch.Generator().manual_seed(seed)
    sd = {"ref_mca": torch.randn(1, n, c, generator=g)}
    for emb in ("embedding", "ref_mca_embedding"):
        sd[f"{emb}.project_embedding.project.weight"] = torch.randn(d, c, 1, generator=g) * 0.2
        sd[f"{emb}.project_embedding.project.bias"] = torch.randn(d, generator=g) * 0.1
    shapes = {"in_proj_weight": (3 * d, d), "in_proj_bias": (3 * d,),
              "out_proj.weight": (d, d), "out_proj.bias": (d,),
              "norm1.weight": (d,), "norm1.bias": (d,), "norm2.weight": (d,), "norm2.bias": (d,),
              "ffn.fc1.weight": (4 * d, d), "ffn.fc1.bias": (4 * d,),
              "ffn.fc2.weight": (d, 4 * d), "ffn.fc2.bias": (d,)}
    for i in range(n_layers):
        for name, shape in shapes.items():
            for attn in (("mca", "nsa") if "proj" in name else ("",)):
                key = f"encoder.encode_layers.{i}.{attn + '.' if attn else ''}{name}"
                sd[key] = torch.randn(*shape, generator=g) * 0.2 + ("norm" in name)
    sd["encoder.norm.weight"] = torch.rand(d, generator=g) + 0.5
    sd["encoder.norm.bias"] = torch.randn(d, generator=g) * 0.1
    sd["projection.weight"] = torch.randn(c, d, generator=g) * 0.2
    sd["projection.bias"] = torch.randn(c, generator=g) * 0.1
    return sd


def _authors_pos_embed(d, h, w):
    """The official 2-D sin-cos table: (d, h, w) channel-first, flattened row-major to (h*w, d)."""
    half = d // 2
    div = torch.exp(torch.arange(0.0, half, 2) * -(np.log(1e4) / half))  # (half/2,)
    pe = torch.zeros(d, h, w)
    col = torch.arange(0.0, w)[:, None] * div  # (w, half/2)
    row = torch.arange(0.0, h)[:, None] * div  # (h, half/2)
    pe[0:half:2] = torch.sin(col).T[:, None, :]
    pe[1:half:2] = torch.cos(col).T[:, None, :]
    pe[half::2] = torch.sin(row).T[:, :, None]
    pe[half + 1 :: 2] = torch.cos(row).T[:, :, None]
    return pe.permute(1, 2, 0).reshape(h * w, d)


def _authors_forward(sd, x, h, w, window, n_heads):
    """The official RLR forward, written from the paper's code with torch's own attention."""
    d = sd["encoder.norm.weight"].shape[0]
    hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    near = ((np.abs(hh.reshape(-1, 1) - hh.reshape(1, -1)) <= window // 2)
            & (np.abs(ww.reshape(-1, 1) - ww.reshape(1, -1)) <= window // 2))
    inside = torch.from_numpy(near)
    lca_mask = torch.zeros(h * w, h * w).masked_fill(~inside, float("-inf"))
    mlka_mask = torch.zeros(h * w, h * w).masked_fill(inside, float("-inf"))
    pe = _authors_pos_embed(d, h, w)

    def embed(prefix, t):  # Conv1d over (N, C, L)
        y = F.conv1d(t.transpose(1, 2), sd[f"{prefix}.project_embedding.project.weight"],
                     sd[f"{prefix}.project_embedding.project.bias"])
        return y.transpose(1, 2) + pe

    def mha(prefix):
        m = nn.MultiheadAttention(d, n_heads, batch_first=True)
        m.load_state_dict({k: sd[f"{prefix}.{k}"] for k in m.state_dict()})
        return m.eval()

    x = embed("embedding", x)
    ref = embed("ref_mca_embedding", sd["ref_mca"].repeat(x.shape[0], 1, 1))
    n_layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.encode_layers"))
    for i in range(n_layers):
        p = f"encoder.encode_layers.{i}"
        mca = mha(f"{p}.mca")(x, ref, ref, attn_mask=lca_mask)[0]
        nsa = mha(f"{p}.nsa")(x, ref, x, attn_mask=mlka_mask)[0]
        x = F.layer_norm(2 * mca + nsa, (d,), sd[f"{p}.norm1.weight"], sd[f"{p}.norm1.bias"])
        y = F.linear(F.gelu(F.linear(x, sd[f"{p}.ffn.fc1.weight"], sd[f"{p}.ffn.fc1.bias"])),
                     sd[f"{p}.ffn.fc2.weight"], sd[f"{p}.ffn.fc2.bias"])
        x = F.layer_norm(x + y, (d,), sd[f"{p}.norm2.weight"], sd[f"{p}.norm2.bias"])
    x = F.layer_norm(x, (d,), sd["encoder.norm.weight"], sd["encoder.norm.bias"])
    return F.linear(x, sd["projection.weight"], sd["projection.bias"])


def test_hand_built_official_dict_maps_and_computes_like_the_authors_code(tmp_path):
    cfg = _config()
    m = create_model(cfg)
    levels = [_official_level(c, h * w, 32, 1, seed=k) for k, (c, (h, w))
              in enumerate(zip(m.backbone.channels, m.backbone.grid_sizes, strict=True))]
    mapped = compat.official_to_rlr(levels)
    conv = levels[0]["embedding.project_embedding.project.weight"]
    assert torch.equal(mapped["levels.0.in_embed.weight"], conv[:, :, 0])  # Conv1d -> Linear
    assert torch.equal(mapped["levels.0.reference"], levels[0]["ref_mca"][0])
    assert torch.equal(mapped["levels.1.layers.0.lca.in_proj_weight"],
                       levels[1]["encoder.encode_layers.0.mca.in_proj_weight"])
    assert torch.equal(mapped["levels.1.layers.0.mlka.out_proj.bias"],
                       levels[1]["encoder.encode_layers.0.nsa.out_proj.bias"])
    assert torch.equal(mapped["levels.0.head.weight"], levels[0]["projection.weight"])

    path = tmp_path / "hand.pth"
    torch.save({"state_dict": levels, "epoch": 3}, path)
    imported, _ = compat.import_official(path, cfg)
    feats = _features(imported)
    with torch.no_grad():
        outs = imported.reconstructor(feats)
        for k, (level, out) in enumerate(zip(imported.reconstructor.levels, outs, strict=True)):
            h, w = level.grid
            tokens = feats[k].flatten(2).transpose(1, 2)  # (B, L, C)
            ref = _authors_forward(levels[k], tokens, h, w, level.window, cfg.levels[k].n_heads)
            ours = out.recon.flatten(2).transpose(1, 2)
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    assert compat.rlr_to_official(imported)[1].keys() == levels[1].keys()


@pytest.mark.parametrize(("config", "match"), [
    (_config(d_model=64), r"level 0: the checkpoint has d_model 32, the config 64"),
    (_config(n_layers=2, d_model=32), r"level 0: the checkpoint has 1 layers, the config 2"),
    (preset("tiny", feature_norm="none").replace(
        backbone=BackboneConfig("tf_efficientnet_lite0", (2, 3), 64, weights="none")),
     r"level 0: the checkpoint's reference is \(1, 256, 24\).*C=40, L=64 \(8x8 grid.*image size"),
    (preset("tiny").replace(
        backbone=BackboneConfig("tf_efficientnet_lite0", (1, 2), 64, weights="none")),
     r"feature_norm='none'"),
])
def test_checkpoint_that_does_not_fit_the_config_is_refused(checkpoint, config, match):
    with pytest.raises(CheckpointError, match=match):
        compat.import_official(checkpoint, config)


def test_unknown_official_keys_are_refused(model, tmp_path):
    levels = compat.rlr_to_official(model)
    levels[0]["encoder.gate"] = torch.ones(1, 2)  # the gated variant rlr does not implement
    path = tmp_path / "gated.pth"
    torch.save({"state_dict": levels}, path)
    with pytest.raises(CheckpointError, match=r"level 0: keys with no place.*encoder\.gate"):
        compat.import_official(path, _config())


class _Custom:
    """A harmless class: still refused, only tensors, containers and numpy scalars load."""


class _Payload:
    """Stands for any class a malicious or careless checkpoint could carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_objects_outside_the_allowlist_are_never_executed(model, tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": compat.rlr_to_official(model), "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"outside rlr's allowlist.*needs (posix|nt)\.system"):
        compat.load_official_checkpoint(path)
    assert not marker.exists()
    torch.save({"state_dict": compat.rlr_to_official(model), "cfg": _Custom()}, path)
    with pytest.raises(CheckpointError, match=r"needs [\w.]*_Custom.*will not unpickle"):
        compat.import_official(path, _config())


def test_unreadable_and_missing_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        compat.load_official_checkpoint(tmp_path / "none.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(CheckpointError, match="cannot read"):
        compat.load_official_checkpoint(junk)
    flat = tmp_path / "flat.pth"
    torch.save({"epoch": 1}, flat)
    with pytest.raises(CheckpointError, match="state_dict"):
        compat.load_official_checkpoint(flat)
