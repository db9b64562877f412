"""Model artifacts: one safetensors file per model version, a JSON manifest in its header.

Tensors: the whole `RLRModel.state_dict()`, backbone included (a worker needs no backbone
download). `__metadata__["rlr_manifest"]`: schema, config, backbone provenance, class names,
thresholds, training summary, metrics and a sha256 over both. Loading never unpickles.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.metadata
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any, NamedTuple

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from rlr.calibrate import DEFAULT_SLOT
from rlr.config import RLRConfig
from rlr.errors import ArtifactError, BackboneError, ConfigError
from rlr.model import RLRModel, create_model
from rlr.state import state_mismatches

SCHEMA_VERSION = 1
FORMAT = "rlr-model"
MANIFEST_KEY = "rlr_manifest"
UPDATABLE = ("thresholds", "metrics", "training")
_REQUIRED = ("config", "backbone", "class_names", "thresholds", "sha256")
_Fields = Mapping[str, Any] | None  # thresholds: class or "default" -> float | None


class Artifact(NamedTuple):
    model: RLRModel  # in eval mode, on the requested device
    manifest: dict[str, Any]


def save_artifact(path: str | os.PathLike[str], model: RLRModel, class_names: Iterable[str],
                  thresholds: _Fields = None, training: _Fields = None,
                  metrics: _Fields = None) -> dict[str, Any]:
    """Write `model` and its manifest to `path` atomically; returns the manifest (with sha256)."""
    manifest = build_manifest(model, class_names, thresholds, training, metrics)
    data, manifest = _encode(_tensors(model), manifest)
    _write_atomic(Path(path), data)
    return manifest


def artifact_to_bytes(model: RLRModel, class_names: Iterable[str], thresholds: _Fields = None,
                      training: _Fields = None, metrics: _Fields = None) -> bytes:
    """The artifact file's bytes, e.g. to ship through Redis; `read_manifest_bytes` reads it."""
    manifest = build_manifest(model, class_names, thresholds, training, metrics)
    return _encode(_tensors(model), manifest)[0]


def load_artifact(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Artifact:
    """Verify (schema, sha256, config vs weights) and load an artifact file."""
    return load_artifact_bytes(_read(Path(path)), device, source=str(path))


def load_artifact_bytes(data: bytes, device: str | torch.device = "cpu",
                        source: str = "artifact") -> Artifact:
    """Like `load_artifact`, from the file's bytes; `source` names them in error messages."""
    tensors, manifest = _decode(data, source)
    return Artifact(_build_model(tensors, manifest, source).to(device).eval(), manifest)


def verify_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of the artifact at `path`, after checking the whole file: structure,
    schema and the sha256 over every tensor and the manifest. Builds no model (fast)."""
    path = Path(path)
    return _decode(_read(path), str(path))[1]


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest from the file header, without reading the weights.

    Checks the schema version but NOT the sha256 (that needs every tensor); use
    `verify_artifact` or `load_artifact` before trusting the weights or the thresholds.
    """
    path = Path(path)
    _check_exists(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
    except safetensors.SafetensorError as exc:
        raise _unreadable(str(path), exc) from None
    return _parse_manifest(meta, str(path))


def read_manifest_bytes(data: bytes, source: str = "artifact") -> dict[str, Any]:
    """The manifest of an artifact held in memory; validates the whole file and its sha256."""
    return _decode(data, source)[1]


def update_manifest(path: str | os.PathLike[str], **fields: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite the artifact at `path` with changed `thresholds`, `metrics` or `training`.

    Each given dict is merged key by key into the stored one (a threshold set to None is
    cleared); the sha256 is recomputed. The file is verified first, so a tampered artifact is
    never re-signed. Returns the new manifest.
    """
    path = Path(path)
    data, manifest = update_manifest_bytes(_read(path), source=str(path), **fields)
    _write_atomic(path, data)
    return manifest


def update_manifest_bytes(data: bytes, source: str = "artifact",
                          **fields: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """`update_manifest` on an artifact held in memory: returns (new bytes, new manifest)."""
    unknown = sorted(set(fields) - set(UPDATABLE))
    if unknown:
        raise ArtifactError(
            f"cannot update manifest fields {unknown}: only {', '.join(UPDATABLE)} can change "
            "after training; the rest describe the weights, so train or import a new model"
        )
    tensors, manifest = _decode(data, source)
    manifest = dict(manifest)
    for name, changes in fields.items():
        if not isinstance(changes, Mapping):
            raise ArtifactError(f"{name} must be a dict of changes, got {type(changes).__name__}")
        if name == "thresholds":
            manifest[name] = _thresholds(manifest["class_names"], changes, manifest[name])
        else:
            manifest[name] = {**(manifest.get(name) or {}), **_plain(dict(changes), name)}
    return _encode(tensors, manifest)


def build_manifest(model: RLRModel, class_names: Iterable[str], thresholds: _Fields = None,
                   training: _Fields = None, metrics: _Fields = None) -> dict[str, Any]:
    """The manifest of `model` (without sha256), as plain JSON types."""
    names = _class_names(class_names)
    backbone = model.backbone
    manifest = {
        "schema_version": SCHEMA_VERSION, "format": FORMAT, "rlr_version": rlr_version(),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": model.config.to_dict(),
        "backbone": {
            "name": model.config.backbone.name,
            "weight_source": str(getattr(backbone, "weight_source", "unknown")),
            "image_size": model.image_size, "channels": list(backbone.channels),
            "grid_sizes": [list(g) for g in backbone.grid_sizes],
        },
        "class_names": names, "thresholds": _thresholds(names, thresholds or {}),
        "training": dict(training or {}), "metrics": dict(metrics or {}),
    }
    return _plain(manifest, "manifest")


def artifact_sha256(tensors: Mapping[str, Tensor], manifest: Mapping[str, Any]) -> str:
    """sha256 over every tensor (sorted by name: name, dtype, shape, raw bytes) and the
    manifest without its `sha256` field (canonical JSON), each part length-prefixed."""
    h = hashlib.sha256(b"rlr-artifact\x00")

    def part(data: Any) -> None:
        view = memoryview(data)
        h.update(view.nbytes.to_bytes(8, "little"))
        h.update(view)

    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        part(json.dumps([name, dtype, list(t.shape)]).encode())
        part(t.reshape(-1).view(torch.uint8).numpy())  # raw bytes, any dtype (bf16 included)
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    part(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    return h.hexdigest()


def rlr_version() -> str:
    try:
        return importlib.metadata.version("rlr")
    except importlib.metadata.PackageNotFoundError:  # running from a source checkout
        from rlr.version import __version__

        return __version__


# --- encoding ------------------------------------------------------------------------------


def _tensors(model: RLRModel) -> dict[str, Tensor]:
    # safetensors refuses shared or non-contiguous storage: give every tensor its own copy.
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _encode(tensors: dict[str, Tensor], manifest: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    manifest = {k: v for k, v in manifest.items() if k != "sha256"}
    manifest["sha256"] = artifact_sha256(tensors, manifest)
    text = json.dumps(manifest, sort_keys=True, ensure_ascii=False, allow_nan=False)
    # "format": "pt" lets generic safetensors tools recognise the file as PyTorch weights.
    data = safetensors.torch.save(tensors, metadata={"format": "pt", MANIFEST_KEY: text})
    return data, manifest


def _decode(data: bytes, source: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Parse and verify: safetensors structure, manifest schema, sha256."""
    try:
        tensors = safetensors.torch.load(bytes(data))
    except safetensors.SafetensorError as exc:
        raise _unreadable(source, exc) from None
    # The structure was just validated by safetensors; its header is 8 bytes of length + JSON.
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(bytes(data[8 : 8 + header_len])).get("__metadata__")
    manifest = _parse_manifest(meta, source)
    actual = artifact_sha256(tensors, manifest)
    if manifest["sha256"] != actual:
        raise ArtifactError(
            f"{source}: sha256 mismatch (manifest {str(manifest['sha256'])[:16]}, content "
            f"{actual[:16]}): the file was modified or corrupted after it was written; "
            "re-export the model or re-download the artifact"
        )
    return tensors, manifest


def _parse_manifest(meta: Mapping[str, str] | None, source: str) -> dict[str, Any]:
    if not meta or MANIFEST_KEY not in meta:
        raise ArtifactError(
            f"{source} is a safetensors file but not an rlr model artifact (no "
            f"'{MANIFEST_KEY}' manifest in its header); write artifacts with "
            "rlr.artifact.save_artifact or `rlrctl train`, import official checkpoints with "
            "`rlrctl import-official`"
        )
    try:
        manifest = json.loads(meta[MANIFEST_KEY])
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{source}: the manifest is not valid JSON ({exc}); the file is damaged: "
            "re-export the model or re-download the artifact"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{source}: the manifest does not describe an rlr model "
                            f"(format is not {FORMAT!r}); is this the right file?")
    version = manifest.get("schema_version")
    if type(version) is not int:
        raise ArtifactError(f"{source}: manifest schema_version {version!r} is not an integer; "
                            "the file is damaged: re-export or re-download it")
    if version != SCHEMA_VERSION:
        newer = version > SCHEMA_VERSION
        fix = ("upgrade rlr (pip install -U rlr) on this machine" if newer else
               "load it with the rlr that wrote it and re-export it, or retrain the model")
        raise ArtifactError(
            f"{source} has manifest schema {version}, {'newer' if newer else 'older'} than the "
            f"{SCHEMA_VERSION} this rlr {rlr_version()} reads (written by rlr "
            f"{manifest.get('rlr_version', '?')}); {fix}"
        )
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ArtifactError(f"{source}: the manifest lacks {missing}; the file was not written "
                            "by rlr or is damaged: re-export or re-download it")
    return manifest


def _build_model(tensors: dict[str, Tensor], manifest: dict[str, Any], source: str) -> RLRModel:
    try:
        config = RLRConfig.from_dict(manifest["config"])
        # The artifact carries the backbone weights: never fetch or unpack them here.
        model = create_model(config, load_backbone_weights=False)
    except (ConfigError, BackboneError) as exc:
        raise ArtifactError(f"{source}: the manifest config cannot build a model: {exc}") from None
    problems = state_mismatches(model.state_dict(), tensors)
    if problems:
        raise ArtifactError(
            f"{source}: the manifest config does not match the weights: {'; '.join(problems)}; "
            "the artifact was assembled inconsistently: re-export it from the trained model"
        )
    model.load_state_dict(tensors, strict=True)
    # Keep the provenance of the stored backbone weights (the rebuilt backbone says "unloaded").
    model.backbone.weight_source = manifest["backbone"].get("weight_source", "unknown")
    return model


# --- manifest fields -----------------------------------------------------------------------


def _class_names(names: Iterable[str]) -> list[str]:
    if isinstance(names, (str, bytes)):
        raise ArtifactError(f"class_names must be a list of names, got the string {names!r}")
    out = list(names)
    bad = [n for n in out if not isinstance(n, str) or not n or n == DEFAULT_SLOT]
    if bad:
        raise ArtifactError(f"invalid class names {bad}: use non-empty strings other than "
                            f"{DEFAULT_SLOT!r} (that thresholds slot is for unknown classes)")
    dups = sorted({n for n in out if out.count(n) > 1})
    if dups:
        raise ArtifactError(f"class names {dups} appear more than once; give each class once")
    return out


def _thresholds(names: list[str], given: Mapping[str, Any],
                current: Mapping[str, Any] | None = None) -> dict[str, float | None]:
    """One slot per class plus "default"; None = not calibrated yet."""
    slots: dict[str, float | None] = {n: None for n in [*names, DEFAULT_SLOT]}
    slots.update(current or {})
    for key, value in given.items():
        if key not in slots:
            raise ArtifactError(f"threshold for unknown class {key!r}; the model's classes are "
                                f"{names} plus {DEFAULT_SLOT!r}")
        if value is not None:
            number = None
            if not isinstance(value, (bool, str, bytes)):
                with contextlib.suppress(TypeError, ValueError):  # numpy scalars, 0-d tensors
                    number = float(value)
            if number is None:
                raise ArtifactError(f"threshold {key!r} = {value!r} is not a number or None")
            value = number
            if not math.isfinite(value):
                raise ArtifactError(f"threshold {key!r} = {value} is not finite; use None to "
                                    "leave a class uncalibrated")
        slots[key] = value
    return slots


def _plain(value: Any, where: str) -> Any:
    """`value` as JSON types: numpy scalars and 0-d tensors become numbers, arrays become lists,
    paths and datetimes strings; non-finite floats become None (JSON has no NaN)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy scalar, 0-d tensor
        return _plain(value.item(), where)
    if hasattr(value, "tolist") and hasattr(value, "shape"):  # numpy array, tensor
        return _plain(value.tolist(), where)
    raise ArtifactError(f"{where} holds a {type(value).__name__}, which a JSON manifest cannot "
                        "store; convert it to numbers, strings, lists or dicts")


# --- files ---------------------------------------------------------------------------------


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise ArtifactError(f"model artifact {path} does not exist; check the path, or fetch "
                            "the model version from the registry")
    if not path.is_file():
        raise ArtifactError(f"model artifact {path} is not a file; give the .safetensors file")


def _read(path: Path) -> bytes:
    _check_exists(path)
    return path.read_bytes()  # one read: what is verified is exactly what is loaded


def _unreadable(source: str, exc: Exception) -> ArtifactError:
    return ArtifactError(
        f"{source} is not a readable safetensors model artifact ({exc}): it is truncated, "
        "damaged or a different kind of file; re-export the model or re-download the artifact"
    )


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file next to `path`, fsync, then rename over `path`: readers see the
    old file or the new one, never a partial write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600; workers under another user must read it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError, AttributeError):  # make the rename durable (POSIX only)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
