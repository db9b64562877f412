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

A cache is only as good as its files: a graph edited on disk would score every frame wrong
with no error. So every export also records the sha256 of each of its files in `files.json`,
bound to the artifact's sha256 and the exporter's version and written last, and a cached graph
is loaded only when every file still has its recorded sha256. A damaged cache (a file changed,
truncated or missing, or no record) is exported again, or refused with one line
(`on_damage="refuse"`), with a warning naming the file either way.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
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

from rlr.errors import CacheDamaged, ConfigError
from rlr.model import RLRModel
from rlr.version import __version__

PRECISIONS = ("fp32", "fp16", "bf16")
OPSET = 17
SEAL = "files.json"  # each file's sha256, bound to the artifact and the exporter
ON_DAMAGE = ("reexport", "refuse")

Warn = Callable[..., Any]  # warn(event, **fields), as a structlog logger's `warning`


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
        seal(tmp, manifest.get("sha256"))
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
                  cache_dir: Path, on_damage: str = "reexport", warn: Warn | None = None) -> Path:
    """The graph of `model` in `fmt`, exported once per artifact sha256 (and rlr version).

    A cached graph is returned only when its files match their record (`check_seal`); a
    damaged one is exported again, or refused (`on_damage="refuse"`: `CacheDamaged`)."""
    folder = artifact_cache(manifest, cache_dir) / f"{fmt.name}-{precision}"
    graph = folder / fmt.file
    if folder.exists() and trusted(folder, manifest.get("sha256"), on_damage, warn):
        return graph
    # Export a copy: tracing must not touch the caller's model (it may be serving).
    try:
        write_export(copy.deepcopy(model).cpu().float().eval(), manifest, fmt, folder,
                     precision=precision)
    except OSError:
        # Another process may have written the same export first: take it if it is whole.
        if check_seal(folder, manifest.get("sha256")) is not None:
            raise
    return graph


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def exporter() -> str:
    """What wrote an export: a graph traced by another rlr or torch is not the same graph."""
    return f"rlr {__version__}, torch {torch.__version__}"


def seal(folder: Path, source_sha256: str | None) -> None:
    """Record the sha256 of every file in `folder`, bound to the artifact and the exporter.
    Written after the files, atomically: a record always describes whole files."""
    files = {p.name: file_sha256(p) for p in sorted(Path(folder).iterdir())
             if p.is_file() and p.name != SEAL and not p.name.startswith(".")}
    record = {"source_sha256": source_sha256, "exporter": exporter(), "files": files}
    tmp = Path(folder) / f".{SEAL}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(Path(folder) / SEAL)


def check_seal(folder: Path, source_sha256: str | None) -> tuple[Path, str] | None:
    """None when every file of `folder` has the sha256 its record gives; else the file at
    fault and why."""
    folder = Path(folder)
    try:
        record = json.loads((folder / SEAL).read_text())
        files = record["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("no files listed")
    except FileNotFoundError:
        return folder / SEAL, "no record of the files' sha256 (an unfinished or older export)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return folder / SEAL, f"the record of the files is unreadable ({exc})"
    if record.get("source_sha256") != source_sha256:
        return folder / SEAL, (f"recorded for artifact {str(record.get('source_sha256'))[:16]},"
                               f" not {str(source_sha256)[:16]}")
    if record.get("exporter") != exporter():
        return folder / SEAL, f"written by {record.get('exporter')}, not {exporter()}"
    for name, sha in sorted(files.items()):
        path = folder / str(name)
        if Path(str(name)).name != name:
            return folder / SEAL, f"the record names a file outside the folder: {name!r}"
        if not path.is_file():
            return path, "missing"
        if file_sha256(path) != sha:
            return path, ("its sha256 differs from the one recorded at export (the file was "
                          f"changed or truncated; {path.stat().st_size} bytes now)")
    return None


def trusted(folder: Path, source_sha256: str | None, on_damage: str = "reexport",
            warn: Warn | None = None) -> bool:
    """True when the cached files of `folder` can be loaded; False when they must be written
    again (warned, naming the file); `CacheDamaged` when `on_damage` is "refuse"."""
    if on_damage not in ON_DAMAGE:
        raise ConfigError(f"on_damage {on_damage!r}: use one of {', '.join(ON_DAMAGE)}")
    problem = check_seal(folder, source_sha256)
    if problem is None:
        return True
    path, why = problem
    action = "refused" if on_damage == "refuse" else "exported again"
    (warn or _warn)("engine_cache_damaged", file=str(path), why=why, action=action)
    if on_damage == "refuse":
        raise CacheDamaged(f"engine cache {path}: {why}; refusing to load it (delete {folder} "
                           "to export it again, or let damaged caches be re-exported)")
    return False


def _warn(event: str, **fields: Any) -> None:
    logging.getLogger("rlr.engines").warning(
        "%s %s", event, " ".join(f"{k}={v!r}" for k, v in fields.items()))


def artifact_cache(manifest: dict[str, Any], cache_dir: Path) -> Path:
    """The cache folder of one artifact (its sha256) under this rlr version."""
    sha = manifest.get("sha256") or "unsaved"
    return Path(cache_dir) / f"{sha[:24]}-{__version__}"
