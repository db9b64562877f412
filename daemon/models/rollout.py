"""Per-line rollout state (which model version serves which camera) and its routing rule.

Pure: no Redis. `daemon.models.registry` stores it; workers route frames with `Rollout.route`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field


def stable_bucket(camera: str) -> float:
    """A number in [0, 100) from sha256(camera): the same on every process and host."""
    digest = hashlib.sha256(camera.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


@dataclass(frozen=True)
class Rollout:
    line: str
    production: str | None = None
    previous: str | None = None  # production before the last production change
    canary: str | None = None
    canary_cameras: list[str] = field(default_factory=list)
    canary_percent: float = 0.0  # used when canary_cameras is empty
    shadow: str | None = None
    revision: int = 0
    updated_at: float = 0.0
    updated_by: str = ""
    corrupt: str | None = None  # set (never stored) when the record in Redis is unreadable

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        if out["corrupt"] is None:
            del out["corrupt"]
        return out

    @classmethod
    def from_json(cls, d: dict) -> Rollout:
        return known_fields(cls, d)

    def versions(self) -> set[str]:
        """Versions a worker on this line must load (production, canary, shadow)."""
        return {v for v in (self.production, self.canary, self.shadow) if v is not None}

    def references(self) -> set[str]:
        """`versions()` plus `previous` (kept for rollback): what must not be deleted."""
        return self.versions() | ({self.previous} if self.previous else set())

    def in_canary(self, camera: str) -> bool:
        if self.canary is None:
            return False
        if self.canary_cameras:
            return camera in self.canary_cameras
        return stable_bucket(camera) < self.canary_percent

    def route(self, camera: str) -> str | None:
        """The version that serves `camera`'s frames (alerts and the results stream)."""
        return self.canary if self.in_canary(camera) else self.production

    def describe_canary(self) -> str:
        if self.canary is None:
            return "-"
        scope = (f"cameras {','.join(self.canary_cameras)}" if self.canary_cameras
                 else f"{self.canary_percent:g}% of cameras")
        return f"{self.canary} ({scope})"


def drop_alias(ro: Rollout, production: str) -> Rollout:
    """A version that becomes production stops being the line's canary or shadow."""
    if ro.canary == production:
        ro = dataclasses.replace(ro, canary=None, canary_cameras=[], canary_percent=0.0)
    if ro.shadow == production:
        ro = dataclasses.replace(ro, shadow=None)
    if ro.previous == production:
        ro = dataclasses.replace(ro, previous=None)
    return ro


def known_fields(cls, d: dict):
    """Build dataclass `cls` from JSON `d`, ignoring keys a newer writer added."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})
