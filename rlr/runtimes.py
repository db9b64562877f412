"""Serving runtimes behind one interface: `predict(images) -> Prediction`, like `RLRModel`.

`build_runtime(name, artifact)` gives a runtime for a loaded artifact: `torch` runs the model
itself; `onnxruntime`, `openvino` and `tensorrt` run its exported graph (`rlr.export`), built
once and cached on local disk under the artifact's sha256, so loading the same model version
again (a restart, a rollout back) costs no export. Callers never know which runtime computes
their scores; the runtimes agree with torch to about 1e-5 in fp32 (tests/unit/rlr/test_export.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from rlr.errors import ConfigError
from rlr.export import GRAPH_FILES, export_model
from rlr.model import Prediction, RLRModel
from rlr.version import __version__

RUNTIMES = ("torch", "onnxruntime", "openvino", "tensorrt")
COMPILE_MODES = ("off", "default", "max-autotune")
_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
_EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}


class Runtime(Protocol):
    name: str
    precision: str
    image_size: int

    def predict(self, images: Tensor) -> Prediction:
        """(B, 3, S, S) float images in [0, 1] -> scores (B,) and maps (B, S, S), float32."""
        ...


def available(device: torch.device | None = None) -> list[str]:
    """The runtimes that can run here (their package imports; TensorRT needs CUDA)."""
    out = ["torch"]
    for name, module in _MODULES.items():
        if importlib.util.find_spec(module) is None:
            continue
        if name == "tensorrt" and (device is None or device.type != "cuda"):
            continue
        out.append(name)
    return out


class TorchRuntime:
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


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, path: Path, image_size: int, device: torch.device,
                 threads: int | None = None) -> None:
        ort = _require("onnxruntime")
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


class OpenVinoRuntime:
    name = "openvino"

    def __init__(self, path: Path, image_size: int, precision: str = "fp32",
                 threads: int = 0) -> None:
        ov = _require("openvino")
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


def build_runtime(name: str, model: RLRModel, manifest: dict[str, Any], device: torch.device,
                  precision: str, cache_dir: Path, max_batch: int = 32,
                  compile: str = "off", threads: int = 0) -> Runtime:
    """The runtime `name` for a loaded artifact; exports (once, cached) what it needs.
    `compile` (torch only): torch.compile mode, off / default / max-autotune.
    `threads` > 0: CPU threads the model computes with (torch: for the whole process)."""
    if name not in RUNTIMES:
        raise ConfigError(f"engine {name!r} unknown; use one of {', '.join(RUNTIMES)}")
    if threads < 0:
        raise ConfigError(f"threads {threads}: use 0 (the engine's default) or more")
    if threads:
        # A worker process per core or two, each with its own threads, beats one process
        # whose threads wait on each other at every operator while the event loop, Redis and
        # the cameras take turns on the same cores.
        torch.set_num_threads(threads)
    if name == "torch":
        return TorchRuntime(model, device, precision, compile)
    if compile != "off":
        raise ConfigError(f"compile mode {compile!r} applies to the torch engine only; "
                          f"{name} runs its own optimised graph (set compile off)")
    _require(_MODULES[name])
    if name == "onnxruntime" and precision != "fp32":
        raise ConfigError("onnxruntime serves fp32 here; for bf16 use openvino (CPU) or "
                          "tensorrt (GPU)")
    fmt = "onnx" if name in ("onnxruntime", "tensorrt") else name
    graph = cached_export(model, manifest, fmt, "fp32" if fmt == "onnx" else precision,
                          cache_dir)
    if name == "onnxruntime":
        return OnnxRuntime(graph, model.image_size, device, threads or None)
    if name == "openvino":
        return OpenVinoRuntime(graph, model.image_size, precision, threads)
    from rlr.trt import TensorRTRuntime

    return TensorRTRuntime.from_onnx(graph, model.image_size, device, precision, max_batch)


def cached_export(model: RLRModel, manifest: dict[str, Any], fmt: str, precision: str,
                  cache_dir: Path) -> Path:
    """The graph of `model` in `fmt`, exported once per artifact sha256 (and rlr version)."""
    sha = manifest.get("sha256") or "unsaved"
    folder = Path(cache_dir) / f"{sha[:24]}-{__version__}" / f"{fmt}-{precision}"
    graph = folder / GRAPH_FILES[fmt]
    if not graph.exists():
        # Export a copy: tracing must not touch the caller's model (it may be serving).
        export_model(_cpu_copy(model), manifest, fmt, folder, precision=precision)
    return graph


def measure(runtime: Runtime, batch: int, seconds: float = 1.0) -> float:
    """Frames/s of `runtime` on random batches of `batch` (after one warm-up batch)."""
    s = runtime.image_size
    x = torch.rand(batch, 3, s, s)
    runtime.predict(x)
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < seconds:
        runtime.predict(x)
        n += batch
    return n / (time.perf_counter() - t0)


def pick_fastest(model: RLRModel, manifest: dict[str, Any], device: torch.device,
                 batch: int, cache_dir: Path, seconds: float = 1.0,
                 log=None, threads: int = 0) -> tuple[Runtime, dict[str, float]]:
    """`auto`: every runtime available here (fp32) measured on this machine, the fastest one.

    A runtime recorded by `rlrctl engines bench` for this model is taken without measuring.
    Torch is always a candidate, so the choice is never slower than torch."""
    record = bench_record(manifest, cache_dir)
    if record and record.get("batch") == batch and record.get("best") in available(device):
        return build_runtime(record["best"], model, manifest, device, "fp32", cache_dir,
                             threads=threads), \
            record["fps"]
    fps: dict[str, float] = {}
    best: tuple[float, Runtime] | None = None
    for name in available(device):
        try:
            rt = build_runtime(name, model, manifest, device, "fp32", cache_dir,
                               threads=threads)
            fps[name] = measure(rt, batch, seconds)
        except Exception as exc:  # a runtime that cannot run this model is not a candidate
            if log is not None:
                log(name, exc)
            continue
        if best is None or fps[name] > best[0]:
            best = (fps[name], rt)
    assert best is not None  # torch always runs
    return best[1], fps


def bench_record(manifest: dict[str, Any], cache_dir: Path) -> dict | None:
    path = _record_path(manifest, cache_dir)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_bench_record(manifest: dict[str, Any], batch: int, fps: dict[str, float],
                       cache_dir: Path) -> Path:
    path = _record_path(manifest, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    best = max(fps, key=fps.get)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"batch": batch, "fps": fps, "best": best,
                               "measured_at": time.time()}, indent=2))
    tmp.replace(path)
    return path


def _record_path(manifest: dict[str, Any], cache_dir: Path) -> Path:
    sha = manifest.get("sha256") or "unsaved"
    return Path(cache_dir) / f"{sha[:24]}-{__version__}" / "bench.json"


def _cpu_copy(model: RLRModel) -> RLRModel:
    import copy

    return copy.deepcopy(model).cpu().float().eval()


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS.get(module, module)
        raise ConfigError(f"the {module} engine is not installed: pip install 'rlr[{extra}]' "
                          "(or use the torch engine)") from exc

