"""Export a trained model's inference graph for serving runtimes (ONNX, OpenVINO, TorchScript).

The exported graph is `images (B, 3, S, S) float32 in [0, 1] -> (score (B,), map (B, S, S))`,
the same computation as `RLRModel.predict`: the backbone, the fast reconstructor path and the
scorer. The reference side of every layer does not depend on the input, so it is computed once
here and stored in the graph as constants (as the fast path caches it at inference).

Every export writes `export.json` beside the graph: the format, precision and batch, and the
source artifact's manifest with its sha256, so an export can be traced back to its model
version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rlr.errors import ConfigError
from rlr.model import RLRModel
from rlr.version import __version__

FORMATS = ("onnx", "openvino", "torchscript")
PRECISIONS = ("fp32", "fp16", "bf16")
OPSET = 17
GRAPH_FILES = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.pt"}


class InferenceGraph(nn.Module):
    """`RLRModel.predict` as a plain forward pass, for tracing and export."""

    def __init__(self, model: RLRModel) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:  # (B, 3, S, S)
        pred = self.model.predict_features(self.model.features(images))
        return pred.score, pred.anomaly_map  # (B,), (B, S, S)


def export_model(model: RLRModel, manifest: dict[str, Any], fmt: str, out: str | os.PathLike,
                 batch: int | None = None, precision: str = "fp32") -> Path:
    """Write `fmt`'s graph and `export.json` into the folder `out` (atomically: a reader never
    sees half an export); returns the graph's path. `batch` None keeps the batch dimension
    dynamic; a number fixes it (some runtimes plan better for a fixed shape)."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} unknown; use one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} unknown; use one of {', '.join(PRECISIONS)}")
    if fmt != "openvino" and precision != "fp32":
        raise ConfigError(f"{fmt} exports are fp32; reduced precision is chosen by the runtime "
                          "(openvino stores fp16/bf16 weights; TensorRT builds fp16/bf16 "
                          "engines from the fp32 ONNX graph)")
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch {batch} must be at least 1 (or left out for any batch)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        graph = InferenceGraph(model.cpu().float())
        s = model.image_size
        example = torch.rand(batch or 2, 3, s, s)
        if fmt == "torchscript":
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(graph, example, check_trace=False)
            traced.save(str(tmp / GRAPH_FILES[fmt]))
        else:
            onnx_path = tmp / GRAPH_FILES["onnx"]
            _export_onnx(graph, example, onnx_path, dynamic=batch is None)
            if fmt == "openvino":
                _to_openvino(onnx_path, tmp / GRAPH_FILES[fmt], precision)
                onnx_path.unlink()
        info = {"format": fmt, "precision": precision, "batch": batch, "image_size": s,
                "inputs": {"images": ["B", 3, s, s]},
                "outputs": {"score": ["B"], "map": ["B", s, s]},
                "opset": OPSET if fmt != "torchscript" else None, "rlr_version": __version__,
                "torch_version": torch.__version__,
                "source_sha256": manifest.get("sha256"), "manifest": manifest}
        (tmp / "export.json").write_text(json.dumps(info, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / GRAPH_FILES[fmt]


def read_export(folder: str | os.PathLike) -> dict[str, Any]:
    """The `export.json` of an export folder."""
    path = Path(folder) / "export.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder} is not an rlr export ({path.name}: {exc}); write one with "
                          "`rlrctl export MODEL.rlr --format ... --out DIR`") from exc


def _export_onnx(graph: nn.Module, example: Tensor, path: Path, dynamic: bool) -> None:
    axes = {"images": {0: "batch"}, "score": {0: "batch"}, "map": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks turned constant
        torch.onnx.export(graph, (example,), str(path), input_names=["images"],
                          output_names=["score", "map"], opset_version=OPSET,
                          dynamic_axes=axes if dynamic else None, dynamo=False,
                          do_constant_folding=True)


def _to_openvino(onnx_path: Path, xml_path: Path, precision: str) -> None:
    try:
        import openvino as ov
    except ImportError as exc:
        raise ConfigError("the openvino format needs OpenVINO: pip install 'rlr[openvino]'") \
            from exc
    model = ov.convert_model(str(onnx_path))
    if precision == "bf16":  # weights stay fp32 on disk; the runtime computes in bf16
        model.set_rt_info("bf16", ["runtime_options", "INFERENCE_PRECISION_HINT"])
    ov.save_model(model, str(xml_path), compress_to_fp16=precision == "fp16")
