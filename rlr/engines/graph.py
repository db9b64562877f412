"""A trained model's inference graph, written in an engine's format and cached per artifact.

The exported graph is `images (B, 3, S, S) float32 in [0, 1] -> (score (B,), map (B, S, S))`,
the same computation as `RLRModel.predict`: the backbone, the fast reconstructor path and the
scorer. The reference side of every layer does not depend on the input, so it is computed once
here and stored in the graph as constants (as the fast path caches it at inference).

A `Format` names the graph's file and how to write it; each engine module declares the formats
it exports, and ONNX, which several engines read, is defined here. Every export writes
`export.json` beside the graph: the format, precision and batch, and the source artifact's
manifest with its sha256, so an export can be traced back to its model version.
`cached_export` writes a graph once per artifact sha256 (and rlr version), so loading the same
model version again (a restart, a rollout back) costs no export.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rlr.errors import ConfigError
from rlr.model import RLRModel
from rlr.version import __version__

PRECISIONS = ("fp32", "fp16", "bf16")
OPSET = 17


@dataclass(frozen=True)
class Format:
    """A graph format: its name (`rlrctl export --format`), its file, its writer and the
    precisions it stores. `write(graph, example, path, dynamic, precision)` writes `path`."""

    name: str
    file: str
    write: Callable[[nn.Module, Tensor, Path, bool, str], None]
    precisions: tuple[str, ...] = ("fp32",)


class InferenceGraph(nn.Module):
    """`RLRModel.predict` as a plain forward pass, for tracing and export."""

    def __init__(self, model: RLRModel) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:  # (B, 3, S, S)
        pred = self.model.predict_features(self.model.features(images))
        return pred.score, pred.anomaly_map  # (B,), (B, S, S)


def write_onnx(graph: nn.Module, example: Tensor, path: Path, dynamic: bool,
               precision: str = "fp32") -> None:
    require_onnx()
    axes = {"images": {0: "batch"}, "score": {0: "batch"}, "map": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks turned constant
        torch.onnx.export(graph, (example,), str(path), input_names=["images"],
                          output_names=["score", "map"], opset_version=OPSET,
                          dynamic_axes=axes if dynamic else None, dynamo=False,
                          do_constant_folding=True)


def require_onnx() -> None:
    """torch writes ONNX graphs with the `onnx` package: say which extra installs it."""
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise ConfigError("exporting an ONNX graph needs the onnx package: pip install "
                          "'rlr[onnx]' (or use the torch engine)") from exc


ONNX = Format("onnx", "model.onnx", write_onnx)


def write_export(model: RLRModel, manifest: dict[str, Any], fmt: Format,
                 out: str | os.PathLike, batch: int | None = None,
                 precision: str = "fp32") -> Path:
    """Write `fmt`'s graph and `export.json` into the folder `out` (atomically: a reader never
    sees half an export); returns the graph's path. `batch` None keeps the batch dimension
    dynamic; a number fixes it (some engines plan better for a fixed shape)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} unknown; use one of {', '.join(PRECISIONS)}")
    if precision not in fmt.precisions:
        raise ConfigError(f"{fmt.name} exports are {'/'.join(fmt.precisions)}; reduced "
                          "precision is chosen by the engine (openvino stores fp16/bf16 "
                          "weights; TensorRT builds fp16/bf16 engines from the fp32 ONNX graph)")
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch {batch} must be at least 1 (or left out for any batch)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        graph = InferenceGraph(model.cpu().float())
        s = model.image_size
        example = torch.rand(batch or 2, 3, s, s)
        fmt.write(graph, example, tmp / fmt.file, batch is None, precision)
        info = {"format": fmt.name, "precision": precision, "batch": batch, "image_size": s,
                "inputs": {"images": ["B", 3, s, s]},
                "outputs": {"score": ["B"], "map": ["B", s, s]},
                "opset": OPSET if fmt.name != "torchscript" else None,
                "rlr_version": __version__, "torch_version": torch.__version__,
                "source_sha256": manifest.get("sha256"), "manifest": manifest}
        (tmp / "export.json").write_text(json.dumps(info, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / fmt.file


def read_export(folder: str | os.PathLike) -> dict[str, Any]:
    """The `export.json` of an export folder."""
    path = Path(folder) / "export.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder} is not an rlr export ({path.name}: {exc}); write one with "
                          "`rlrctl export MODEL.rlr --format ... --out DIR`") from exc


def cached_export(model: RLRModel, manifest: dict[str, Any], fmt: Format, precision: str,
                  cache_dir: Path) -> Path:
    """The graph of `model` in `fmt`, exported once per artifact sha256 (and rlr version)."""
    folder = artifact_cache(manifest, cache_dir) / f"{fmt.name}-{precision}"
    graph = folder / fmt.file
    if not graph.exists():
        # Export a copy: tracing must not touch the caller's model (it may be serving).
        write_export(copy.deepcopy(model).cpu().float().eval(), manifest, fmt, folder,
                     precision=precision)
    return graph


def artifact_cache(manifest: dict[str, Any], cache_dir: Path) -> Path:
    """The cache folder of one artifact (its sha256) under this rlr version."""
    sha = manifest.get("sha256") or "unsaved"
    return Path(cache_dir) / f"{sha[:24]}-{__version__}"
