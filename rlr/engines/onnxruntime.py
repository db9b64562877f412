"""The onnxruntime engine: the exported ONNX graph on ONNX Runtime, fp32.

Runs on the CPU, or on the CUDA execution provider when onnxruntime-gpu is installed and the
device is CUDA. Needs `pip install 'rlr[onnx]'`. It exports ONNX (`rlrctl export --format onnx`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from rlr.engines.base import Build, EngineKind, require
from rlr.engines.graph import ONNX
from rlr.errors import ConfigError
from rlr.model import Prediction


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def __init__(self, path: Path, image_size: int, device: torch.device,
                 threads: int | None = None) -> None:
        ort = require("onnxruntime", "onnx")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.precision, self.image_size = "fp32", image_size

    def predict(self, images: Tensor) -> Prediction:
        x = images.detach().float().cpu().numpy()
        score, amap = self.session.run(["score", "map"], {"images": x})
        return Prediction(torch.from_numpy(score), torch.from_numpy(amap))


def _build(b: Build) -> OnnxRuntimeEngine:
    if b.precision != "fp32":
        raise ConfigError("onnxruntime serves fp32 here; for bf16 use openvino (CPU) or "
                          "tensorrt (GPU)")
    return OnnxRuntimeEngine(b.graph(ONNX), b.model.image_size, b.device, b.threads or None)


ENGINE = EngineKind(
    "onnxruntime", _build, requires="onnxruntime", extra="onnx", formats=(ONNX,), rank=10,
    summary="the exported ONNX graph on ONNX Runtime (CUDA provider when present)")
