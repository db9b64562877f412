"""The openvino engine: the exported graph on OpenVINO's CPU plug-in, fp32, bf16 or fp16.

bf16 needs a CPU that OpenVINO reports bf16 support on. Needs `pip install 'rlr[openvino]'`.
It exports OpenVINO IR (`rlrctl export --format openvino`), converted from the ONNX graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rlr.engines.base import Build, EngineKind, require
from rlr.engines.graph import Format, write_onnx
from rlr.errors import ConfigError
from rlr.model import Prediction


class OpenVinoEngine:
    name = "openvino"

    def __init__(self, path: Path, image_size: int, precision: str = "fp32",
                 threads: int = 0) -> None:
        ov = require("openvino")
        hint = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}[precision]
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU",
                                                                   "OPTIMIZATION_CAPABILITIES"):
            raise ConfigError("this CPU has no bf16 support (OpenVINO reports none); use fp32")
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision, self.image_size = precision, image_size

    def predict(self, images: Tensor) -> Prediction:
        x = images.detach().float().cpu().numpy()
        out = self.request.infer({0: x})
        score, amap = (np.asarray(out[self.compiled.output(k)]) for k in ("score", "map"))
        return Prediction(torch.from_numpy(score.copy()), torch.from_numpy(amap.copy()))


def write_openvino(graph: nn.Module, example: Tensor, path: Path, dynamic: bool,
                   precision: str = "fp32") -> None:
    try:
        import openvino as ov
    except ImportError as exc:
        raise ConfigError("the openvino format needs OpenVINO: pip install 'rlr[openvino]'") \
            from exc
    onnx_path = path.with_suffix(".onnx")
    write_onnx(graph, example, onnx_path, dynamic)
    model = ov.convert_model(str(onnx_path))
    if precision == "bf16":  # weights stay fp32 on disk; the engine computes in bf16
        model.set_rt_info("bf16", ["runtime_options", "INFERENCE_PRECISION_HINT"])
    ov.save_model(model, str(path), compress_to_fp16=precision == "fp16")
    onnx_path.unlink()


OPENVINO = Format("openvino", "model.xml", write_openvino, precisions=("fp32", "fp16", "bf16"))


def _build(b: Build) -> OpenVinoEngine:
    return OpenVinoEngine(b.graph(OPENVINO, b.precision), b.model.image_size, b.precision,
                          b.threads)


ENGINE = EngineKind(
    "openvino", _build, requires="openvino", extra="openvino", formats=(OPENVINO,), rank=20,
    precisions=("fp32", "bf16", "fp16"),
    summary="the exported graph on OpenVINO (CPU); bf16 where the CPU supports it")
