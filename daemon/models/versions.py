"""Model versions as the registry records them: provenance, classes, thresholds, metrics.

A version's record is built from its artifact's manifest at registration (`summary`), so
`rlrctl models` can list versions without fetching any artifact. A stored record is read by
one function, `parse_version`, which checks every field and turns damage into a version
marked `corrupt` with the reason (listed as such, never a traceback).
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import math
import os
import socket
from dataclasses import dataclass, field

from daemon.models.rollout import checked_fields, json_object


def who() -> str:
    """`user@host`, for the created-by and rollout history fields."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # containers running under a uid with no passwd entry
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class ModelVersion:
    id: str  # "m-" + the first 12 hex digits of the artifact sha256
    sha256: str  # the manifest's sha256 (rlr artifact checksum)
    size_bytes: int
    created_at: float
    created_by: str
    source_job: str | None
    note: str
    class_names: list[str]
    preset: str | None
    image_size: int | None
    thresholds: dict
    metrics: dict
    blob_sha256: str = ""  # sha256 of the artifact file's bytes, checked on fetch
    backbone: str = ""
    training: dict = field(default_factory=dict)  # the manifest's training result summary
    corrupt: str | None = None  # set (never stored) when the record in Redis is unreadable

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        if out["corrupt"] is None:
            del out["corrupt"]
        return out

    @classmethod
    def from_json(cls, d: dict) -> ModelVersion:
        """The version of JSON `d`; `ValueError` naming the first field that is wrong."""
        v = checked_fields(cls, d)
        if v.size_bytes < 0 or v.created_at < 0:
            raise ValueError("size_bytes and created_at cannot be negative")
        for name, t in v.thresholds.items():
            if t is not None and not _number(t):
                raise ValueError(f"thresholds: {name}: {json.dumps(t)[:40]} is not a number")
        loss = v.training.get("best_val_loss")
        if loss is not None and not _number(loss):
            raise ValueError("training: best_val_loss is not a number")
        return v

    @classmethod
    def unreadable(cls, version_id: str, why: str) -> ModelVersion:
        """What is known of a version whose record cannot be read: its id and why."""
        return cls(id=version_id, sha256="", size_bytes=0, created_at=0.0, created_by="",
                   source_job=None, note="", class_names=[], preset=None, image_size=None,
                   thresholds={}, metrics={}, corrupt=why)

    @property
    def calibrated(self) -> str:
        """"yes" (every threshold set), "partly" or "no"."""
        values = list(self.thresholds.values())
        n = sum(v is not None for v in values)
        return "no" if n == 0 else "yes" if n == len(values) else "partly"


def parse_version(version_id: str, raw: bytes | str) -> ModelVersion:
    """A `rlr:models` entry as stored: the version, or one marked `corrupt` with the reason
    (not JSON, a field of the wrong type, an id that differs from its key)."""
    try:
        v = ModelVersion.from_json({**json_object(json.loads(raw)), "corrupt": None})
        if v.id != version_id:
            raise ValueError(f"id {v.id[:20]!r} differs from its key")
        return v
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        shown = raw[:40].decode(errors="replace") if isinstance(raw, bytes) else raw[:40]
        return ModelVersion.unreadable(version_id, f"{shown!r}: {exc}")


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def summary(manifest: dict) -> dict:
    cfg = manifest.get("config") or {}
    bb = manifest.get("backbone") or {}
    training = manifest.get("training") or {}
    size = bb.get("image_size") or (cfg.get("backbone") or {}).get("image_size")
    return {"class_names": list(manifest.get("class_names") or []),
            "preset": _preset(manifest), "image_size": int(size) if size else None,
            "thresholds": dict(manifest.get("thresholds") or {}),
            "metrics": dict(manifest.get("metrics") or {}),
            "backbone": str(bb.get("name") or ""),
            "training": dict(training.get("result") or {})}


def _preset(manifest: dict) -> str | None:
    """The preset named in the manifest, else the preset whose architecture the config has."""
    cfg = manifest.get("config") or {}
    for where in (cfg, manifest, manifest.get("training") or {}):
        if isinstance(where.get("preset"), str):
            return where["preset"]
    from rlr.config import PRESETS

    def arch(c: dict) -> tuple:
        b = c.get("backbone") or {}
        return (b.get("name"), list(b.get("out_indices") or []),
                json.dumps(c.get("levels"), sort_keys=True), c.get("feature_norm"))

    found = [name for name, p in PRESETS.items()
             if arch(json.loads(json.dumps(p.to_dict()))) == arch(cfg)]
    return found[0] if len(found) == 1 else None
