"""Stream entries as table rows: a `rlr:results:{line}` entry as a `frame_results` row, a
`rlr:parts:{line}` entry as a `part_verdicts` row, a `rlr:recipe:log:{line}` entry as a
`recipe_changes` row. An entry that cannot be read raises `Unreadable` with the reason (the
recorder counts it, logs it and moves on).

A result may carry the optional `part` and `view` fields of a frame that belongs to a part.
A part verdict entry (`daemon.wire.parts.PartVerdict.to_fields`) is read as: `part_id`,
`verdict` (pass / reject / incomplete), `ts` (when it was decided, seconds), optional
`first_ts` (its first view's capture time; `ts` when absent), `outcome` (pass / reject; absent:
reject unless the verdict is pass, as `PartVerdict.from_fields` reads it), `missing`
(comma-joined views), `total_ms`, `recipe`, `product`, `class` and `views` (JSON: view ->
{camera, frame_id, score, threshold, model_version, latency_ms, ...}).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from daemon.records.tables import OUTCOMES, RECIPE_ACTIONS, VERDICTS


class Unreadable(ValueError):
    """A stream entry the records cannot store; the message says why."""


def _field(fields: Mapping, name: str) -> str | None:
    value = fields.get(name.encode(), fields.get(name))
    if value is None:
        return None
    try:
        return value.decode() if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise Unreadable(f"field {name!r} is not UTF-8 text") from None


def _ms(seconds: str | None) -> int | None:
    return None if seconds in (None, "") else round(float(seconds) * 1000)


def frame_row(line: str, entry_id: str, fields: Mapping, recorded_ms: int) -> dict[str, Any]:
    """The `frame_results` row of a results-stream entry (the fields `Result.to_fields`
    writes, read here directly: this runs for every result the recorder writes)."""
    try:
        t = {(k.decode() if isinstance(k, bytes) else k):
             (v.decode() if isinstance(v, bytes) else str(v))
             for k, v in fields.items() if k not in (b"mask", "mask")}
    except UnicodeDecodeError:
        raise Unreadable("a field is not UTF-8 text") from None
    try:
        is_anomaly = t["is_anomaly"] == "1"
        row = {"line": line, "camera": t["camera"], "frame_id": t["frame_id"],
               "ts_ms": round(float(t["ts"]) * 1000), "score": float(t["score"]),
               "threshold": float(t["threshold"]) if t.get("threshold") else None,
               "is_anomaly": is_anomaly, "model_version": t["model_version"],
               "latency_ms": float(t["latency_ms"]) if t.get("latency_ms") else None,
               "product_class": t.get("class") or None, "part_id": t.get("part") or None,
               "view": t.get("view") or None}
    except (KeyError, ValueError) as exc:
        raise Unreadable(f"not a result entry ({exc!r})") from None
    # the recorder fills these in for the frames whose pictures it keeps (`pictures`)
    row.update(picture_ref=None, mask_ref=None, entry_id=entry_id, recorded_ms=recorded_ms)
    return row


def part_row(line: str, entry_id: str, fields: Mapping, recorded_ms: int) -> dict[str, Any]:
    """The `part_verdicts` row of a parts-stream entry."""
    part_id, verdict = _field(fields, "part_id"), _field(fields, "verdict")
    if not part_id:
        raise Unreadable("no part_id")
    if verdict not in VERDICTS:
        raise Unreadable(f"verdict {verdict!r} is not one of {VERDICTS}")
    try:
        views = json.loads(_field(fields, "views") or "{}")
        ts_ms = _ms(_field(fields, "ts"))
        first_ts_ms = _ms(_field(fields, "first_ts"))
        total = _field(fields, "total_ms")
        total_ms = float(total) if total else None
    except ValueError as exc:
        raise Unreadable(f"bad number or JSON ({exc})") from None
    if not isinstance(views, dict):
        raise Unreadable("views is not a JSON object")
    if ts_ms is None:
        raise Unreadable("no ts (when the verdict was decided)")
    outcome = _field(fields, "outcome") or ("pass" if verdict == "pass" else "reject")
    if outcome not in OUTCOMES:
        raise Unreadable(f"outcome {outcome!r} is not one of {OUTCOMES}")
    return {"line": line, "part_id": part_id, "recipe": _field(fields, "recipe") or None,
            "product": _field(fields, "product") or None, "verdict": verdict, "views": views,
            "first_ts_ms": ts_ms if first_ts_ms is None else first_ts_ms, "ts_ms": ts_ms,
            "total_ms": total_ms, "entry_id": entry_id, "recorded_ms": recorded_ms,
            "outcome": outcome, "missing": _field(fields, "missing") or None,
            "product_class": _field(fields, "class") or None}


def recipe_row(line: str, entry_id: str, fields: Mapping, recorded_ms: int) -> dict[str, Any]:
    """The `recipe_changes` row of a recipe-log entry (`RecipeStore.activate` writes one per
    switch and per refusal: ts, action, name, revision, by, via, why)."""
    action, name = _field(fields, "action"), _field(fields, "name")
    if action not in RECIPE_ACTIONS:
        raise Unreadable(f"action {action!r} is not one of {RECIPE_ACTIONS}")
    if not name:
        raise Unreadable("no recipe name")
    try:
        ts_ms = _ms(_field(fields, "ts"))
        revision = _field(fields, "revision")
        revision = int(revision) if revision else None
    except ValueError as exc:
        raise Unreadable(f"bad number ({exc})") from None
    if ts_ms is None:
        raise Unreadable("no ts (when the recipe was switched)")
    return {"line": line, "ts_ms": ts_ms, "action": action, "name": name[:128],
            "revision": revision, "by": (_field(fields, "by") or "")[:128] or None,
            "via": (_field(fields, "via") or "")[:128] or None,
            "why": _field(fields, "why") or None,
            "entry_id": entry_id, "recorded_ms": recorded_ms}
