"""The tensorrt engine: a TensorRT plan built on the GPU from the exported ONNX graph, cached
beside it. Needs a CUDA device and `pip install 'rlr[tensorrt]'`.

A TensorRT plan is specific to the GPU and TensorRT version it was built with, so the cache
file names both. Like the graph it is built from, the plan is sealed (its sha256 recorded,
bound to the ONNX graph's) and loaded only when it matches.

The batch dimension is dynamic from 1 to `max_batch` (tuned for `max_batch`).
Inputs and outputs stay on the device: the images tensor is handed over by pointer, the
outputs are torch CUDA tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from rlr.engines.base import Build, EngineKind
from rlr.engines.graph import ONNX, SEAL, Warn, file_sha256, seal, trusted
from rlr.errors import ConfigError
from rlr.model import Prediction

_FLAGS = {"fp16": "FP16", "bf16": "BF16"}


def plan_path(onnx_path: Path, device: torch.device, precision: str, max_batch: int,
              trt_version: str) -> Path:
    gpu = torch.cuda.get_device_name(device).replace(" ", "_").replace("/", "_")
    return onnx_path.parent.parent / \
        f"tensorrt-{precision}-b{max_batch}-{gpu}-trt{trt_version}" / "model.plan"


def build_plan(onnx_path: Path, image_size: int, precision: str, max_batch: int) -> bytes:
    """Parse the ONNX graph and build a serialized plan (minutes for big models)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch, the only kind since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if precision in _FLAGS:
        config.set_flag(getattr(trt.BuilderFlag, _FLAGS[precision]))
    profile = builder.create_optimization_profile()
    s = image_size
    profile.set_shape("images", (1, 3, s, s), (max_batch, 3, s, s), (max_batch, 3, s, s))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ConfigError(f"TensorRT could not build an engine from {onnx_path} "
                          f"({precision}); see its log above")
    return bytes(plan)


class TensorRTEngine:
    name = "tensorrt"

    def __init__(self, plan: bytes, image_size: int, device: torch.device,
                 precision: str, max_batch: int) -> None:
        import tensorrt as trt

        self.device, self.precision = device, precision
        self.image_size, self.max_batch = image_size, max_batch
        logger = trt.Logger(trt.Logger.WARNING)
        self.cuda_engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        if self.cuda_engine is None:
            raise ConfigError("TensorRT could not load the cached engine; delete the engine "
                              "cache folder (RLR_ENGINE_CACHE) to rebuild it")
        self.context = self.cuda_engine.create_execution_context()
        self.stream = torch.cuda.Stream(device)

    @classmethod
    def from_onnx(cls, onnx_path: Path, image_size: int, device: torch.device,
                  precision: str = "fp32", max_batch: int = 32, on_damage: str = "reexport",
                  warn: Warn | None = None) -> TensorRTEngine:
        import tensorrt as trt

        if device.type != "cuda":
            raise ConfigError("the tensorrt engine needs a CUDA device (RLR_DEVICE=cuda)")
        path = plan_path(onnx_path, device, precision, max_batch, trt.__version__)
        source = file_sha256(onnx_path)  # the graph was verified before it was handed here
        if not (path.parent.exists() and trusted(path.parent, source, on_damage, warn)):
            plan = build_plan(onnx_path, image_size, precision, max_batch)
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / SEAL).unlink(missing_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(plan)
            tmp.replace(path)
            seal(path.parent, source)
        return cls(path.read_bytes(), image_size, device, precision, max_batch)

    def predict(self, images: Tensor) -> Prediction:
        b = images.shape[0]
        if b > self.max_batch:  # the engine's profile ends there: run it in parts
            parts = [self.predict(images[i:i + self.max_batch])
                     for i in range(0, b, self.max_batch)]
            return Prediction(torch.cat([p.score for p in parts]),
                              torch.cat([p.anomaly_map for p in parts]))
        s = self.image_size
        x = images.to(self.device, torch.float32, non_blocking=True).contiguous()
        score = torch.empty(b, device=self.device)
        amap = torch.empty(b, s, s, device=self.device)
        self.context.set_input_shape("images", tuple(x.shape))
        for name, t in (("images", x), ("score", score), ("map", amap)):
            self.context.set_tensor_address(name, t.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return Prediction(score, amap)


def _build(b: Build) -> TensorRTEngine:
    return TensorRTEngine.from_onnx(b.graph(ONNX), b.model.image_size, b.device, b.precision,
                                    b.max_batch, b.on_damage, b.warn)


ENGINE = EngineKind(
    "tensorrt", _build, requires="tensorrt", extra="tensorrt", needs_cuda=True, rank=30,
    precisions=("fp32", "fp16", "bf16"),
    summary="a TensorRT plan built from the ONNX graph on this GPU (CUDA only)")
