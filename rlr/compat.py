"""Import checkpoints trained with the authors' official RLR code (and export to their layout).

Their file is `torch.save({"state_dict": [level0, level1, ...], "epoch": ..., "best_img_auc":
...})`, one `RLR` module state dict per feature level. It is read with `weights_only=True` and an
allowlist of numpy scalar types only: a checkpoint that needs anything else is refused, never
unpickled. Official models have no feature standardisation (rlr's `feat_mean`/`feat_std` stay
0/1, so the config must say `feature_norm="none"`) and keep their position embedding outside the
state dict (rlr's `pos_embed` buffer is the same fixed sin-cos formula).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlr.config import PAPER_WINDOWS, RLRConfig
from rlr.errors import CheckpointError
from rlr.model import RLRModel, RLRReconstructor, create_model

_WB = r"weight|bias"
_ATTN = r"in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias"
# (official name, rlr name within a level, allowed {p} suffixes); {i} is the layer index.
# LCA is their `mca` (q input, k/v reference), MLKA their `nsa` (q input, k reference, v input).
_NAMES = (
    ("ref_mca", "reference", ""),
    ("embedding.project_embedding.project.{p}", "in_embed.{p}", _WB),
    ("ref_mca_embedding.project_embedding.project.{p}", "ref_embed.{p}", _WB),
    ("encoder.encode_layers.{i}.mca.{p}", "layers.{i}.lca.{p}", _ATTN),
    ("encoder.encode_layers.{i}.nsa.{p}", "layers.{i}.mlka.{p}", _ATTN),
    ("encoder.encode_layers.{i}.norm1.{p}", "layers.{i}.norm1.{p}", _WB),
    ("encoder.encode_layers.{i}.ffn.fc1.{p}", "layers.{i}.fc1.{p}", _WB),
    ("encoder.encode_layers.{i}.ffn.fc2.{p}", "layers.{i}.fc2.{p}", _WB),
    ("encoder.encode_layers.{i}.norm2.{p}", "layers.{i}.norm2.{p}", _WB),
    ("encoder.norm.{p}", "norm.{p}", _WB),
    ("projection.{p}", "head.{p}", _WB),
)
# rlr level state that the official layout has no counterpart for.
_RLR_ONLY = ("pos_embed", "feat_mean", "feat_std")
_CONV_TO_LINEAR = ("in_embed.weight", "ref_embed.weight")  # Conv1d (d, C, 1) <-> Linear (d, C)
_PAPER_HINT = ("pick the preset / backbone / out_indices / image size the checkpoint was "
               "trained with (the paper: preset 'paper', tf_efficientnet_b6, out_indices (2, 3), "
               "image size 256)")


def _pattern(template: str, suffix: str) -> re.Pattern[str]:
    text = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)")
    return re.compile(text.replace(r"\{p\}", f"(?P<p>{suffix})"))


_TO_RLR = [(_pattern(off, suf), ours) for off, ours, suf in _NAMES]
_TO_OFFICIAL = [(_pattern(ours, suf), off) for off, ours, suf in _NAMES]


def _rename(key: str, table: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in table:
        m = pattern.fullmatch(key)
        if m:
            return template.format(**m.groupdict())
    return None


def load_official_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """{"state_dict": [per-level {name: Tensor}], **metadata} with metadata as plain Python."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"official checkpoint {path} does not exist; check the path")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:  # not a class reference: damaged, or not a pickle at all
            raise CheckpointError(
                f"cannot read {path} as a torch checkpoint: its pickle stream is damaged or "
                "uses operations outside torch's weights-only subset; it will not be unpickled"
            ) from None
        raise CheckpointError(
            f"{path} holds Python objects outside rlr's allowlist of tensors, containers and "
            f"numpy scalars (it needs {found[1]}). rlr will not unpickle it, because unpickling "
            "can run arbitrary code; in a trusted environment re-save it as {'state_dict': "
            "[level state dicts], 'epoch': int} with plain values"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path} as a torch checkpoint ({exc}); expected a "
                              "file written by torch.save in the official RLR code") from None
    levels = payload.get("state_dict") if isinstance(payload, dict) else payload
    if not isinstance(levels, (list, tuple)) or not levels:
        raise CheckpointError(f"{path} does not look like an official RLR checkpoint: expected "
                              "{'state_dict': [one state dict per feature level], ...}")
    out = [_level_dict(lv, k, path) for k, lv in enumerate(levels)]
    meta = payload if isinstance(payload, dict) else {}
    return {"state_dict": out,
            **{str(k): _plain(v) for k, v in meta.items() if k != "state_dict"}}


def official_to_rlr(levels: list[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Official per-level state dicts -> `RLRReconstructor` state-dict entries.

    Only the names and the Conv1d / reference shapes change; pos_embed, feat_mean and
    feat_std are not produced (official models have none to give).
    """
    out: dict[str, Tensor] = {}
    for k, level in enumerate(levels):
        unknown = []
        for key, value in level.items():
            name = _rename(key, _TO_RLR)
            if name is None:
                unknown.append(key)
                continue
            out[f"levels.{k}.{name}"] = _to_rlr_shape(name, value, k, key)
        if unknown:
            raise CheckpointError(
                f"level {k}: keys with no place in rlr's architecture: {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''}. rlr imports the paper's configuration "
                "(blocks mca + nsa in parallel, no gate, ref_len 1)"
            )
    return out


def rlr_to_official(model: RLRModel | RLRReconstructor) -> list[dict[str, Tensor]]:
    """The inverse of `official_to_rlr`: per-level state dicts in the authors' naming."""
    recon = getattr(model, "reconstructor", model)
    levels = []
    for k, level in enumerate(recon.levels):
        if not (torch.all(level.feat_mean == 0) and torch.all(level.feat_std == 1)):
            raise CheckpointError(
                f"level {k} standardises its features (feature_norm='channel'); the official "
                "layout has no place for that, so the export would compute something else"
            )
        out = {}
        for name, value in level.state_dict().items():
            if name in _RLR_ONLY:
                continue
            key = _rename(name, _TO_OFFICIAL)
            if key is None:  # a new rlr parameter this mapping does not know yet
                raise CheckpointError(f"level {k}: no official name for rlr parameter {name}")
            value = value.detach().cpu().clone()
            if name == "reference":
                value = value.unsqueeze(0)  # (L, C) -> (1, L, C)
            elif name in _CONV_TO_LINEAR:
                value = value.unsqueeze(-1)  # (d, C) -> (d, C, 1)
            out[key] = value
        levels.append(out)
    return levels


def import_official(path: str | os.PathLike[str], config: RLRConfig,
                    load_backbone_weights: bool = True) -> tuple[RLRModel, dict[str, Any]]:
    """Build an `RLRModel` for `config` carrying the official checkpoint's reconstructors.

    Returns (model in eval mode, checkpoint metadata such as epoch and best_img_auc as plain
    Python values). n_heads cannot be read from the weights and comes from `config`.
    """
    payload = load_official_checkpoint(path)
    levels = payload["state_dict"]
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    _check_config(config, len(levels))
    model = create_model(config, load_backbone_weights=load_backbone_weights)
    for k, level in enumerate(levels):
        _check_level(k, level, model, config)
    mapped = official_to_rlr(levels)
    recon = model.reconstructor
    own = recon.state_dict()
    wanted = [key for key in own if key.rsplit(".", 1)[-1] not in _RLR_ONLY]
    missing = [_official_name(key) for key in wanted if key not in mapped]
    unexpected = [_official_name(key) for key in mapped if key not in own]
    wrong = [f"{_official_name(key)} {tuple(mapped[key].shape)} vs {tuple(own[key].shape)}"
             for key in wanted if key in mapped and mapped[key].shape != own[key].shape]
    problems = [f"{label} {items[:5]}{' ...' if len(items) > 5 else ''}"
                for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches (checkpoint vs config)", wrong)) if items]
    if problems:
        raise CheckpointError(f"{path} does not fit the config: {'; '.join(problems)}; "
                              f"{_PAPER_HINT}")
    recon.load_state_dict({**own, **mapped}, strict=True)
    return model.eval(), meta


# --- checks --------------------------------------------------------------------------------


def _check_config(config: RLRConfig, n_levels: int) -> None:
    if config.feature_norm != "none":
        raise CheckpointError(
            f"config feature_norm is {config.feature_norm!r}, but official models read raw "
            "backbone features; use feature_norm='none' (as preset 'paper' does)"
        )
    if n_levels != len(config.levels):
        raise CheckpointError(
            f"the checkpoint has {n_levels} levels but the config {len(config.levels)} "
            f"(out_indices {config.backbone.out_indices}); {_PAPER_HINT}"
        )
    for k, lc in enumerate(config.levels):
        if (lc.lca_weight, lc.mlka_weight) != (2.0, 1.0):
            raise CheckpointError(
                f"level {k}: the official layer sums 2*LCA + 1*MLKA, the config says "
                f"{lc.lca_weight}*LCA + {lc.mlka_weight}*MLKA; use lca_weight=2, mlka_weight=1"
            )


def _check_level(k: int, level: Mapping[str, Tensor], model: RLRModel,
                 config: RLRConfig) -> None:
    """Compare what the weights reveal (C, L, d_model, n_layers) with the config, per level."""
    ref = level.get("ref_mca")
    if ref is None or ref.ndim != 3 or ref.shape[0] != 1:
        shape = None if ref is None else tuple(ref.shape)
        raise CheckpointError(f"level {k}: ref_mca is {shape}, expected (1, L, C); this is not "
                              "an official RLR level state dict")
    n, c = int(ref.shape[1]), int(ref.shape[2])
    h, w = model.backbone.grid_sizes[k]
    want_c = model.backbone.channels[k]
    if (c, n) != (want_c, h * w):
        side = round(n**0.5)
        grid = f", a {side}x{side} grid" if side * side == n else ""
        bb = config.backbone
        raise CheckpointError(
            f"level {k}: the checkpoint's reference is {tuple(ref.shape)} (C={c}, L={n}{grid}) "
            f"but the config expects C={want_c}, L={h * w} ({h}x{w} grid of {bb.name} "
            f"out_indices {bb.out_indices} at image size {bb.image_size}); {_PAPER_HINT}"
        )
    lc = config.levels[k]
    d = int(level["encoder.norm.weight"].shape[0]) if "encoder.norm.weight" in level else None
    if d is not None and d != lc.d_model:
        raise CheckpointError(f"level {k}: the checkpoint has d_model {d}, the config "
                              f"{lc.d_model}; set levels[{k}].d_model={d} (the paper: 256, 512)")
    found = {int(m[1]) for key in level if (m := re.match(r"encoder\.encode_layers\.(\d+)\.", key))}
    n_layers = max(found) + 1 if found else 0
    if n_layers != lc.n_layers:
        raise CheckpointError(f"level {k}: the checkpoint has {n_layers} layers, the config "
                              f"{lc.n_layers}; set levels[{k}].n_layers={n_layers} (the paper: 4)")
    window = model.reconstructor.levels[k].window
    if h == w and h in PAPER_WINDOWS and window != PAPER_WINDOWS[h]:
        raise CheckpointError(f"level {k}: the official code uses a {PAPER_WINDOWS[h]}x"
                              f"{PAPER_WINDOWS[h]} window on a {h}x{w} grid, the config "
                              f"{window}x{window}; set levels[{k}].window=None")


def _to_rlr_shape(name: str, value: Tensor, k: int, key: str) -> Tensor:
    if name == "reference":
        if value.ndim != 3 or value.shape[0] != 1:
            raise CheckpointError(f"level {k}: {key} is {tuple(value.shape)}, expected (1, L, C)")
        return value[0]  # (1, L, C) -> (L, C)
    if name in _CONV_TO_LINEAR:
        if value.ndim != 3 or value.shape[-1] != 1:
            raise CheckpointError(f"level {k}: {key} is {tuple(value.shape)}, expected a "
                                  "kernel-1 Conv1d weight (d_model, C, 1)")
        return value[..., 0]  # (d, C, 1) -> (d, C)
    return value


def _official_name(rlr_key: str) -> str:
    _, k, name = rlr_key.split(".", 2)
    return f"level {k} {_rename(name, _TO_OFFICIAL) or name}"


def _level_dict(level: Any, k: int, path: Path) -> dict[str, Tensor]:
    if not isinstance(level, Mapping) or not all(
        isinstance(key, str) and isinstance(v, Tensor) for key, v in level.items()
    ):
        raise CheckpointError(f"{path}: state_dict[{k}] is not a {{name: tensor}} state dict")
    # nn.DataParallel prefixes every name with "module."; the weights are the same.
    if level and all(key.startswith("module.") for key in level):
        level = {key.removeprefix("module."): v for key, v in level.items()}
    return dict(level)


def _plain(value: Any) -> Any:
    """Checkpoint metadata as plain Python: numpy scalars and 0-d tensors become numbers."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # np.float64, 0-d tensor
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Tensor):
        return f"<tensor {tuple(value.shape)} omitted>"
    return repr(value)


def _numpy_globals() -> list[Any]:
    """numpy scalar reconstruction and dtypes: enough for np.float64 / np.int64 metadata."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    # numpy 1 pickles name numpy.core, numpy 2 numpy._core: accept both spellings.
    allowed: list[Any] = [(scalar, "numpy.core.multiarray.scalar"),
                          (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    kinds = ("Bool", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
             "Float16", "Float32", "Float64")
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    allowed += [getattr(dtypes, f"{kind}DType") for kind in kinds
                if hasattr(dtypes, f"{kind}DType")]
    return allowed

