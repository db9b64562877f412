"""Stream entries as table rows: a `rlr:results:{line}` entry as a `frame_results` row, a
`rlr:parts:{line}` entry as a `part_verdicts` row. An entry that cannot be read raises
`Unreadable` with the reason (the recorder counts it, logs it and moves on).

A result may carry the optional `part` and `view` fields of a frame that belongs to a part.
A part verdict entry is read as: `part_id`, `verdict` (pass / reject / incomplete), `ts`
(when it was decided, seconds), optional `first_ts`, `total_ms`, `recipe`, `product` and
`views` (JSON: view -> {camera, frame_id, score, threshold, model_version, latency_ms, ...}).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from daemon.records.tables import VERDICTS
from daemon.wire.schema import Result
from daemon.wire.text import text


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


def picture_refs(line: str, entry_id: str, fields: Mapping, is_anomaly: bool
                 ) -> tuple[str | None, str | None]:
    """Where the entry's picture and mask are kept under the records folder, as the row's
    (picture_ref, mask_ref). Pictures are not kept by this version: (None, None) for every
    entry. Keeping them (rejects, and a sample of passes) means writing the mask the result
    carries, and the frame it came from, under content-addressed names here."""
    return None, None


def frame_row(line: str, entry_id: str, fields: Mapping, recorded_ms: int) -> dict[str, Any]:
    """The `frame_results` row of a results-stream entry."""
    try:
        r = Result.from_fields({k: v for k, v in fields.items() if text(k) != "mask"})
    except (KeyError, ValueError, TypeError) as exc:
        raise Unreadable(f"not a result entry ({exc!r})") from None
    picture, mask = picture_refs(line, entry_id, fields, r.is_anomaly)
    return {"line": line, "camera": r.camera, "frame_id": r.frame_id,
            "ts_ms": round(r.capture_ts * 1000), "score": r.score, "threshold": r.threshold,
            "is_anomaly": r.is_anomaly, "model_version": r.model_version,
            "latency_ms": r.latency_ms, "product_class": r.product_class,
            "part_id": _field(fields, "part") or None, "view": _field(fields, "view") or None,
            "picture_ref": picture, "mask_ref": mask, "entry_id": entry_id,
            "recorded_ms": recorded_ms}


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
    return {"line": line, "part_id": part_id, "recipe": _field(fields, "recipe") or None,
            "product": _field(fields, "product") or None, "verdict": verdict, "views": views,
            "first_ts_ms": first_ts_ms, "ts_ms": ts_ms, "total_ms": total_ms,
            "entry_id": entry_id, "recorded_ms": recorded_ms}
