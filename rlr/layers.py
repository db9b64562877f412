"""Building blocks of the RLR reconstructor: position embedding, window masks, LCA + MLKA layer.

Two numerically equivalent ways to run a layer:

- dense: the reference is copied per sample and both attentions are full (L x L) masked
  products, as in the paper's code. Kept as the readable definition and for tests.
- fast: the reference's keys/values are computed once (and cached at inference), LCA only
  looks at the w*w reference tokens inside each query's window, everything goes through
  `scaled_dot_product_attention`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sincos_pos_embed(height: int, width: int, d_model: int) -> Tensor:
    """Fixed 2-D sin-cos embedding, (height*width, d_model), tokens row-major (h, w).

    First half of the channels encodes the column w, second half the row h; within a half,
    channel 2k is sin(pos * div[k]) and 2k+1 is cos(pos * div[k]),
    div[k] = exp(-2k * ln(1e4) / half).
    """
    if d_model % 4:
        raise ValueError(f"d_model {d_model} must be a multiple of 4")
    half = d_model // 2
    k = torch.arange(half // 2, dtype=torch.float64)
    div = torch.exp(-2.0 * k * math.log(10000.0) / half)  # (half/2,)
    hh, ww = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    w_pos = ww.reshape(-1, 1) * div  # (L, half/2)
    h_pos = hh.reshape(-1, 1) * div
    emb = torch.zeros(height * width, d_model, dtype=torch.float64)
    emb[:, 0:half:2] = torch.sin(w_pos)
    emb[:, 1:half:2] = torch.cos(w_pos)
    emb[:, half::2] = torch.sin(h_pos)
    emb[:, half + 1 :: 2] = torch.cos(h_pos)
    return emb.float()


def window_mask(height: int, width: int, window: int) -> Tensor:
    """(L, L) bool: True where key position lies in the query's window, clipped at borders."""
    r = window // 2
    hh, ww = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    hh, ww = hh.reshape(-1), ww.reshape(-1)
    near_h = (hh[:, None] - hh[None, :]).abs() <= r
    near_w = (ww[:, None] - ww[None, :]).abs() <= r
    return near_h & near_w


def window_index(height: int, width: int, window: int) -> tuple[Tensor, Tensor]:
    """Gather table of each query's window: idx (L, w*w) long, valid (L, w*w) bool.

    Slots that fall outside the grid point at token 0 and are marked invalid, so a gather
    followed by masking equals the clipped window of `window_mask`.
    """
    r = window // 2
    offs = torch.arange(-r, r + 1)
    dh, dw = torch.meshgrid(offs, offs, indexing="ij")
    dh, dw = dh.reshape(1, -1), dw.reshape(1, -1)  # (1, K)
    hh, ww = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    h = hh.reshape(-1, 1) + dh  # (L, K)
    w = ww.reshape(-1, 1) + dw
    valid = (h >= 0) & (h < height) & (w >= 0) & (w < width)
    idx = torch.where(valid, h * width + w, torch.zeros_like(h))
    return idx, valid


class RefAttention(nn.Module):
    """Multi-head attention with `nn.MultiheadAttention`'s packed (3d, d) projection layout."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def proj(self, x: Tensor, which: int) -> Tensor:
        """which: 0 query, 1 key, 2 value. (..., d) -> (..., heads, d/heads)."""
        d = self.in_proj_weight.shape[1]
        w = self.in_proj_weight[which * d : (which + 1) * d]
        b = self.in_proj_bias[which * d : (which + 1) * d]
        y = F.linear(x, w, b)
        return y.unflatten(-1, (self.n_heads, d // self.n_heads))

    def dense(self, q_in: Tensor, k_in: Tensor, v_in: Tensor, allowed: Tensor) -> Tensor:
        """Plain masked attention. q_in, k_in, v_in: (B, L, d); allowed: (L, L) bool."""
        q = self.proj(q_in, 0).transpose(1, 2)  # (B, h, L, dh)
        k = self.proj(k_in, 1).transpose(1, 2)
        v = self.proj(v_in, 2).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, h, L, L)
        logits = logits.masked_fill(~allowed, float("-inf"))
        out = logits.softmax(-1) @ v  # (B, h, L, dh)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class RefKV(NamedTuple):
    """Input-independent tensors of one layer, derived from the embedded reference."""

    lca_k: Tensor  # (h, L, K, dh) reference keys inside each query's window
    lca_v: Tensor  # (h, L, K, dh)
    mlka_k: Tensor  # (1, h, L, dh) reference keys for MLKA


class RLRLayer(nn.Module):
    """x = LN(a*LCA(x, ref, ref) + b*MLKA(x, ref, x)); x = LN(x + FFN(x))."""

    def __init__(
        self, d_model: int, n_heads: int, ffn_mult: int = 4,
        lca_weight: float = 2.0, mlka_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.lca = RefAttention(d_model, n_heads)
        self.mlka = RefAttention(d_model, n_heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn_mult * d_model)
        self.fc2 = nn.Linear(ffn_mult * d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.lca_weight = lca_weight
        self.mlka_weight = mlka_weight

    def _finish(self, lca: Tensor, mlka: Tensor) -> Tensor:
        x = self.norm1(self.lca_weight * lca + self.mlka_weight * mlka)
        return self.norm2(x + self.fc2(F.gelu(self.fc1(x))))

    def forward_dense(self, x: Tensor, ref: Tensor, local: Tensor) -> Tensor:
        """x: (B, L, d) input tokens, ref: (L, d) embedded reference, local: (L, L) window mask."""
        ref_b = ref.unsqueeze(0).expand(x.shape[0], -1, -1).contiguous()  # per-sample copy
        lca = self.lca.dense(x, ref_b, ref_b, local)
        mlka = self.mlka.dense(x, ref_b, x, ~local)
        return self._finish(lca, mlka)

    def reference_kv(self, ref: Tensor, win_idx: Tensor) -> RefKV:
        """Project the reference once; gather each query's window of LCA keys/values."""
        k = self.lca.proj(ref, 1).transpose(0, 1)  # (h, L, dh)
        v = self.lca.proj(ref, 2).transpose(0, 1)
        mk = self.mlka.proj(ref, 1).transpose(0, 1).unsqueeze(0)  # (1, h, L, dh)
        return RefKV(k[:, win_idx], v[:, win_idx], mk)  # (h, L, K, dh)

    def forward_fast(self, x: Tensor, kv: RefKV, win_valid: Tensor, far: Tensor) -> Tensor:
        """x: (B, L, d); win_valid: (L, K) bool; far: (L, L) bool, True outside the window."""
        b = x.shape[0]
        # LCA: every (head, position) is a tiny attention problem of B queries over K keys.
        q = self.lca.proj(x, 0).permute(2, 1, 0, 3)  # (h, L, B, dh)
        lca = F.scaled_dot_product_attention(
            q, kv.lca_k.to(q.dtype), kv.lca_v.to(q.dtype), attn_mask=win_valid.unsqueeze(1)
        )  # (h, L, B, dh)
        lca = self.lca.out_proj(lca.permute(2, 1, 0, 3).flatten(2))
        # MLKA: keys from the reference (shared by the batch), values from the input.
        mq = self.mlka.proj(x, 0).transpose(1, 2)  # (B, h, L, dh)
        mv = self.mlka.proj(x, 2).transpose(1, 2)
        mk = kv.mlka_k.to(mq.dtype).expand(b, -1, -1, -1)
        mlka = F.scaled_dot_product_attention(mq, mk, mv, attn_mask=far)
        mlka = self.mlka.out_proj(mlka.transpose(1, 2).flatten(2))
        return self._finish(lca, mlka)
