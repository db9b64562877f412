"""The RLR model: frozen backbone + one reference-based reconstructor per feature level.

Pure tensors in, tensors (or small NamedTuples) out; training, data and I/O live elsewhere.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from rlr.config import LevelConfig, RLRConfig, default_window, max_window
from rlr.errors import ConfigError
from rlr.layers import RefKV, RLRLayer, sincos_pos_embed, window_index, window_mask
from rlr.scoring import Scorer, position_scores


class Prediction(NamedTuple):
    score: Tensor  # (B,) image anomaly score
    anomaly_map: Tensor  # (B, S, S) smoothed pixel anomaly map at input resolution


class LevelOutput(NamedTuple):
    target: Tensor  # (B, C, H, W) features the level must reconstruct (normalised)
    recon: Tensor  # (B, C, H, W) reconstruction from the reference


class RLRLevel(nn.Module):
    """Reconstructs one (C, H, W) feature level from a learnable reference."""

    def __init__(self, channels: int, grid: tuple[int, int], cfg: LevelConfig) -> None:
        super().__init__()
        h, w = grid
        window = cfg.window if cfg.window is not None else default_window(min(h, w))
        limit = max(max_window(h), max_window(w))
        if window > limit:
            raise ConfigError(
                f"window {window} covers the whole {h}x{w} grid for some queries, leaving MLKA "
                f"nothing to attend to; use window <= {limit}"
            )
        self.channels, self.grid, self.window, self.cfg = channels, (h, w), window, cfg
        d, n = cfg.d_model, h * w
        self.reference = nn.Parameter(torch.randn(n, channels) * 0.02)  # (L, C)
        self.in_embed = nn.Linear(channels, d)
        self.ref_embed = nn.Linear(channels, d)
        self.layers = nn.ModuleList(
            RLRLayer(d, cfg.n_heads, cfg.ffn_mult, cfg.lca_weight, cfg.mlka_weight)
            for _ in range(cfg.n_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, channels)
        # Shipped with the weights: position embedding and feature standardisation.
        self.register_buffer("pos_embed", sincos_pos_embed(h, w, d))  # (L, d)
        self.register_buffer("feat_mean", torch.zeros(channels))
        self.register_buffer("feat_std", torch.ones(channels))
        # Derived from the grid: rebuilt on construction, not stored.
        local = window_mask(h, w, window)
        idx, valid = window_index(h, w, window)
        self.register_buffer("local_mask", local, persistent=False)  # (L, L)
        self.register_buffer("far_mask", ~local, persistent=False)  # (L, L)
        self.register_buffer("win_idx", idx, persistent=False)  # (L, K)
        self.register_buffer("win_valid", valid, persistent=False)  # (L, K)
        self._cache: tuple[tuple, list[RefKV]] | None = None

    def normalize(self, feats: Tensor) -> Tensor:
        """(B, C, H, W) backbone features -> (B, L, C) standardised tokens."""
        x = feats.flatten(2).transpose(1, 2)
        return (x - self.feat_mean) / self.feat_std

    def embed_reference(self) -> Tensor:
        return self.ref_embed(self.reference) + self.pos_embed  # (L, d)

    def _reference_kv(self) -> list[RefKV]:
        if torch.is_grad_enabled():
            ref = self.embed_reference()
            return [layer.reference_kv(ref, self.win_idx) for layer in self.layers]
        # At inference the reference side never changes: cache it, keyed on parameter versions
        # so an optimizer step or load_state_dict invalidates it.
        key = (
            self.reference.device,
            torch.is_autocast_enabled(self.reference.device.type),
            tuple(p._version for p in self.parameters()),
            tuple(p.data_ptr() for p in self.parameters()),
        )
        if self._cache is None or self._cache[0] != key:
            ref = self.embed_reference()
            self._cache = (key, [layer.reference_kv(ref, self.win_idx) for layer in self.layers])
        return self._cache[1]

    def forward(self, feats: Tensor, jitter: float = 0.0, jitter_prob: float = 1.0,
                dense: bool = False) -> LevelOutput:
        """feats: (B, C, H, W). `jitter` > 0 adds training noise to the input only."""
        b, c, h, w = feats.shape
        if (c, h, w) != (self.channels, *self.grid):
            raise ValueError(
                f"level expects features (B, {self.channels}, {self.grid[0]}, {self.grid[1]}), "
                f"got {tuple(feats.shape)}; image size or backbone differ from the model's"
            )
        target = self.normalize(feats)  # (B, L, C)
        x = target
        if jitter > 0 and torch.rand(()) < jitter_prob:
            # Feature jitter: Gaussian noise scaled by the token norm / C.
            scale = target.norm(dim=-1, keepdim=True) / c * jitter
            x = target + torch.randn_like(target) * scale
        x = self.in_embed(x) + self.pos_embed  # (B, L, d)
        if dense:
            ref = self.embed_reference()
            for layer in self.layers:
                x = layer.forward_dense(x, ref, self.local_mask)
        else:
            for layer, kv in zip(self.layers, self._reference_kv(), strict=True):
                x = layer.forward_fast(x, kv, self.win_valid, self.far_mask)
        recon = self.head(self.norm(x))  # (B, L, C)

        def to_map(t: Tensor) -> Tensor:
            return t.transpose(1, 2).reshape(b, c, h, w)

        return LevelOutput(to_map(target), to_map(recon))

    def train(self, mode: bool = True) -> RLRLevel:
        self._cache = None
        return super().train(mode)


class RLRReconstructor(nn.Module):
    """One `RLRLevel` per backbone level."""

    def __init__(self, channels: tuple[int, ...], grids: tuple[tuple[int, int], ...],
                 levels: tuple[LevelConfig, ...]) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            RLRLevel(c, g, lc) for c, g, lc in zip(channels, grids, levels, strict=True)
        )

    def forward(self, feats: list[Tensor], jitter: float = 0.0, jitter_prob: float = 1.0,
                dense: bool = False) -> list[LevelOutput]:
        return [
            level(f, jitter=jitter, jitter_prob=jitter_prob, dense=dense)
            for level, f in zip(self.levels, feats, strict=True)
        ]

    @torch.no_grad()
    def set_feature_stats(self, means: list[Tensor], stds: list[Tensor]) -> None:
        for level, m, s in zip(self.levels, means, stds, strict=True):
            level.feat_mean.copy_(m)
            level.feat_std.copy_(s.clamp_min(1e-6))


class RLRModel(nn.Module):
    """Backbone + reconstructor + scorer. `forward(images)` -> `Prediction`.

    images: (B, 3, S, S) float RGB in [0, 1], S = config.backbone.image_size.
    """

    def __init__(self, config: RLRConfig, backbone: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.reconstructor = RLRReconstructor(
            backbone.channels, backbone.grid_sizes, config.levels
        )
        self.scorer = Scorer(config.backbone.image_size, config.score.sigma, config.score.topk,
                             config.score.normalize, backbone.grid_sizes)
        self.dense = False  # True runs the reference dense-mask path (tests, benchmarks)

    @property
    def image_size(self) -> int:
        return self.config.backbone.image_size

    def features(self, images: Tensor) -> list[Tensor]:
        s = self.image_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (s, s):
            raise ValueError(
                f"expected images (B, 3, {s}, {s}) in [0, 1], got {tuple(images.shape)}; "
                f"resize to the model's image size {s}"
            )
        return self.backbone(images)

    def predict_features(self, feats: list[Tensor]) -> Prediction:
        outs = self.reconstructor(feats, dense=self.dense)
        amap = self.scorer.anomaly_map([(o.target, o.recon) for o in outs])
        return Prediction(self.scorer.image_score(amap), amap)

    def forward(self, images: Tensor) -> Prediction:
        return self.predict_features(self.features(images))

    @torch.no_grad()
    def level_scores(self, feats: list[Tensor], batch_size: int = 64) -> list[Tensor]:
        """Per level, the raw position scores [(N, h, w)] of backbone features [(N, C, h, w)]."""
        self.eval()
        dev = self.reconstructor.levels[0].reference.device
        out: list[list[Tensor]] = [[] for _ in feats]
        for start in range(0, feats[0].shape[0], batch_size):
            chunk = [f[start : start + batch_size].to(dev).float() for f in feats]
            for i, o in enumerate(self.reconstructor(chunk, dense=self.dense)):
                out[i].append(position_scores(o.target, o.recon).cpu())
        return [torch.cat(o) for o in out]

    def fit_score_normalization(self, feats: list[Tensor]) -> None:
        """`config.score.normalize="position"`: fit the scorer's per-position statistics on
        normal images' backbone features (the validation normals: the training normals are
        reconstructed better than any unseen image). A no-op otherwise."""
        if self.scorer.levels:
            self.scorer.fit_position_stats(self.level_scores(feats))

    @torch.inference_mode()
    def predict(self, images: Tensor, bf16: bool | None = None) -> Prediction:
        """Inference entry point: eval mode, no autograd, bf16 autocast on CUDA.

        `bf16`: None = on CUDA only; False forces float32. Scores are always computed in
        float32, so they compare across devices.
        """
        self.eval()
        on_cuda = images.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda and bf16 is not False):
            return self.predict_features(self.features(images))


def create_model(config: RLRConfig, load_backbone_weights: bool = True) -> RLRModel:
    """Build an untrained RLR model for `config` (backbone weights per `config.backbone`)."""
    from rlr.backbone import Backbone

    backbone = Backbone(config.backbone, load_weights=load_backbone_weights)
    return RLRModel(config, backbone)
