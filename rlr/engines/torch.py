"""The torch engine: the model itself, eager or torch.compile'd, in fp32 or bf16 (CUDA).

The default engine and the reference the others are checked against; it needs nothing beyond
rlr. It exports TorchScript (`rlrctl export --format torchscript`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from rlr.engines.base import COMPILE_MODES, Build, EngineKind
from rlr.engines.graph import Format
from rlr.errors import ConfigError
from rlr.model import Prediction, RLRModel


class TorchEngine:
    name = "torch"

    def __init__(self, model: RLRModel, device: torch.device, precision: str = "fp32",
                 compile: str = "off") -> None:
        if compile not in COMPILE_MODES:
            raise ConfigError(f"compile mode {compile!r}: use one of {COMPILE_MODES}")
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"torch runs fp32 or bf16 (on CUDA), not {precision}")
        if precision == "bf16" and device.type != "cuda":
            raise ConfigError("bf16 with torch needs a CUDA device; use fp32 on the CPU, or "
                              "openvino, which computes in bf16 on CPUs that support it")
        self.model = model.to(device).eval()
        self.device, self.precision = device, precision
        self.image_size = model.image_size
        self.compile = compile
        # Compiled lazily, at the first batch of each shape (the worker's warm-up batch and
        # the feed's fixed batch sizes); `dynamic=False`: one specialised graph per size.
        self._forward = self.model if compile == "off" else \
            torch.compile(self.model, mode=compile, dynamic=False)

    def predict(self, images: Tensor) -> Prediction:
        images = images.to(self.device, non_blocking=True)
        if self.compile == "off":
            return self.model.predict(images, bf16=self.precision == "bf16")
        with torch.inference_mode(), torch.autocast(
                "cuda", dtype=torch.bfloat16,
                enabled=images.device.type == "cuda" and self.precision == "bf16"):
            return self._forward(images)


def write_torchscript(graph: nn.Module, example: Tensor, path: Path, dynamic: bool,
                      precision: str = "fp32") -> None:
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, example, check_trace=False)
    traced.save(str(path))


def _build(b: Build) -> TorchEngine:
    return TorchEngine(b.model, b.device, b.precision, b.compile)


ENGINE = EngineKind(
    "torch", _build, precisions=("fp32", "bf16"), compiles=True, rank=0,
    formats=(Format("torchscript", "model.pt", write_torchscript),),
    summary="the model itself (eager or torch.compile); bf16 on CUDA")
