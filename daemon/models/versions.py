"""Model versions as the registry records them: provenance, classes, thresholds, metrics.

A version's record is built from its artifact's manifest at registration (`summary`), so
`rlrctl models` can list versions without fetching any artifact.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import socket
from dataclasses import dataclass, field

from daemon.models.rollout import known_fields


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

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> ModelVersion:
        return known_fields(cls, d)

    @property
    def calibrated(self) -> str:
        """"yes" (every threshold set), "partly" or "no"."""
        values = list(self.thresholds.values())
        n = sum(v is not None for v in values)
        return "no" if n == 0 else "yes" if n == len(values) else "partly"


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
