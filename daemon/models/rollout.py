"""Per-line rollout state (which model version serves which camera) and its routing rule.

Pure: no Redis. `daemon.models.registry` stores it; workers route frames with `Rollout.route`.
A stored record is read by one function, `parse_rollout`, which checks every field
(`checked_fields`) and turns damage into a `Rollout` marked `corrupt` with the reason, so
no reader (worker, `rlrctl status`, the console) meets a field of the wrong type.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
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
        """The rollout of JSON `d`; `ValueError` naming the first field that is wrong."""
        ro = checked_fields(cls, d)
        if not 0.0 <= ro.canary_percent <= 100.0:
            raise ValueError(f"canary_percent: {ro.canary_percent!r} is not in [0, 100]")
        if ro.revision < 0 or ro.updated_at < 0:
            raise ValueError("revision and updated_at cannot be negative")
        return ro

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


def parse_rollout(line: str, raw: bytes | str | None, revision: bytes | None = None) -> Rollout:
    """A rollout record as stored; `corrupt` says why when it cannot be read (with the plain
    `revision` field kept, when that one is readable)."""
    if raw is None:
        return Rollout(line)
    try:
        return Rollout.from_json({**json_object(json.loads(raw)), "line": line, "corrupt": None})
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        try:
            rev = max(int(revision or 0), 0)
        except ValueError:
            rev = 0
        shown = raw[:40].decode(errors="replace") if isinstance(raw, bytes) else raw[:40]
        return Rollout(line, revision=rev, corrupt=f"{shown!r}: {exc}")


def checked_fields(cls, d: object):
    """Dataclass `cls` from JSON `d`, every field checked against its type (str, int, float,
    bool, dict, list[str], or None where allowed); keys a newer writer added are ignored.
    `ValueError` naming the first wrong or missing field."""
    d = json_object(d)
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in d:
            why = _type_problem(d[f.name], hints[f.name])
            if why:
                raise ValueError(f"{f.name}: {str(json.dumps(d[f.name]))[:40]} is {why}")
            values[f.name] = d[f.name]
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values and
               f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    return cls(**values)


def json_object(d: object) -> dict:
    """`d` when it is a JSON object; `ValueError` saying what it is instead."""
    if not isinstance(d, dict):
        raise ValueError(f"a JSON {type(d).__name__}, not an object")
    return d


def _type_problem(value: object, hint) -> str | None:
    """Why `value` does not fit the type `hint`, or None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    base = typing.get_origin(hint) or hint
    if base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
        return None if ok else "not a finite number"
    if base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "not an integer"
    if not isinstance(value, base):
        return f"not a {base.__name__}"
    if base is list and args and not all(isinstance(x, args[0]) for x in value):
        return f"not a list of {args[0].__name__}"
    return None
