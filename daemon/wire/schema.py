"""Stream message schemas: frames, results, part verdicts, alerts, dead letters (version 1.1).

Version 1.1 added the optional `part` and `view` fields of a frame (carried into its result)
and the part verdicts of `rlr:parts:{line}`; a reader of 1.1 reads 1 (the same fields without
the optional ones), and every reader checks the major number only.

Images inside frames are encoded and decoded by `daemon.wire.codec`.

Every entry carries `v`. Readers accept their own major version only and say so otherwise.
Field values travel as bytes in Redis; numbers as decimal text, lists as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from daemon.errors import FrameError
from daemon.wire import ids
from daemon.wire.text import text

SCHEMA_VERSION = "1.1"
SCHEMA_MAJOR = "1"
ENCODINGS = ("jpeg", "png", "raw")
RAW_DTYPES = ("uint8", "uint16")
_MAX_ID = 128
_EARLIEST_TS = 978_307_200.0  # 2001-01-01: anything earlier is not a capture time
_LATEST_TS = 1e11  # year 5138: larger numbers are milliseconds (or worse)

Fields = Mapping[bytes | str, bytes | str]


def _utf8_field(fields: Fields, key: str) -> str | None:
    value = fields.get(key.encode(), fields.get(key))
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise FrameError("malformed", f"field {key!r} is not UTF-8 text") from None
    return str(value)


def _raw(fields: Fields, key: str) -> bytes | None:
    value = fields.get(key.encode(), fields.get(key))
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


def _decoded(fields: Fields) -> dict[str, str]:
    """Every field as text (binary ones shown as their size), for display and dead letters."""
    out = {}
    for k, v in fields.items():
        key = text(k)
        if isinstance(v, bytes):
            try:
                out[key] = v.decode()
            except UnicodeDecodeError:
                out[key] = f"<{len(v)} bytes>"
        else:
            out[key] = str(v)
    return out


# ----------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    camera: str
    frame_id: str
    ts: float  # capture time, seconds since the epoch
    encoding: str
    data: bytes
    shape: tuple[int, ...] | None = None  # raw only: (H, W) or (H, W, C)
    dtype: str | None = None  # raw only
    product_class: str | None = None
    want_mask: bool = False
    part: str | None = None  # the part this frame shows (its trigger's part id)
    view: str | None = None  # which of the station's views of the part


def encode_frame(camera: str, frame_id: str, ts: float, data: bytes, encoding: str,
                 shape: tuple[int, ...] | None = None, dtype: str | None = None,
                 product_class: str | None = None, want_mask: bool = False,
                 part: str | None = None, view: str | None = None) -> dict[str, bytes]:
    """Stream fields for a frame whose image is already encoded (or raw bytes + shape/dtype)."""
    fields = {"v": SCHEMA_VERSION, "camera": camera, "frame_id": frame_id, "ts": repr(ts),
              "encoding": encoding}
    if shape is not None:
        fields["shape"] = ",".join(str(int(d)) for d in shape)
    if dtype is not None:
        fields["dtype"] = dtype
    if product_class:
        fields["class"] = product_class
    if want_mask:
        fields["mask"] = "1"
    if part:
        fields["part"] = part
    if view:
        fields["view"] = view
    out = {k: v.encode() for k, v in fields.items()}
    out["data"] = data
    return out


def parse_frame(fields: Fields, max_payload_bytes: int) -> Frame:
    """Validate a frames-stream entry (no image decoding). Raises `FrameError`."""
    version = _utf8_field(fields, "v")
    if version is None:
        raise FrameError("malformed", f"no schema version field 'v'; producers must send "
                         f"v={SCHEMA_VERSION}")
    if version.split(".")[0] != SCHEMA_MAJOR:
        raise FrameError("unsupported_version",
                         f"frame schema v={version}, this worker reads v={SCHEMA_VERSION}; "
                         "upgrade the worker or the producer")
    missing = [k for k in ("camera", "frame_id", "ts", "encoding", "data")
               if _raw(fields, k) is None]
    if missing:
        raise FrameError("malformed", f"missing field(s) {missing}")
    camera, frame_id = _id_field(fields, "camera"), _utf8_field(fields, "frame_id")
    if not frame_id or len(frame_id) > _MAX_ID or any(c in frame_id for c in " \t\r\n"):
        raise FrameError("malformed", f"frame_id {frame_id!r} must be 1-{_MAX_ID} characters "
                         "without whitespace")
    try:
        ts = float(_utf8_field(fields, "ts"))
    except ValueError:
        raise FrameError("malformed", f"ts {_utf8_field(fields, 'ts')!r} is not a number "
                         "(seconds since the epoch)") from None
    if not math.isfinite(ts):
        raise FrameError("malformed", f"ts {ts} is not finite")
    if ts > _LATEST_TS:
        raise FrameError("malformed", f"ts {ts!r} is not a capture time in seconds since the "
                         "epoch (it looks like milliseconds: divide by 1000)")
    if ts < _EARLIEST_TS:
        raise FrameError("malformed", f"ts {ts!r} is before 2001: send the capture time in "
                         "seconds since the epoch (time.time())")
    encoding = _utf8_field(fields, "encoding")
    if encoding not in ENCODINGS:
        raise FrameError("malformed", f"encoding {encoding!r}: use one of {ENCODINGS}")
    data = _raw(fields, "data")
    if len(data) > max_payload_bytes:
        raise FrameError("oversized", f"payload {len(data)} bytes exceeds the limit of "
                         f"{max_payload_bytes} (RLR_MAX_PAYLOAD_BYTES); lower the resolution "
                         "or JPEG quality at the producer")
    if not data:
        raise FrameError("malformed", "empty data field")
    shape = dtype = None
    if encoding == "raw":
        shape, dtype = _raw_layout(fields, len(data))
    product_class = _id_field(fields, "class", optional=True)
    part, view = _id_field(fields, "part", optional=True), _id_field(fields, "view", optional=True)
    if view is not None and part is None:
        raise FrameError("malformed", f"view {view!r} without a part: a view names one of the "
                         "pictures of a part, send the part id too")
    return Frame(camera, frame_id, ts, encoding, data, shape, dtype, product_class,
                 _utf8_field(fields, "mask") == "1", part, view)


def _id_field(fields: Fields, key: str, optional: bool = False) -> str | None:
    """An id field checked against the id grammar (`daemon.wire.ids`); absent or empty is
    None where `optional`."""
    value = _raw(fields, key)
    if optional and not value:
        return None
    try:
        return ids.check("class" if key == "class" else key, value if value is not None else "")
    except ids.BadId as exc:
        raise FrameError("malformed", str(exc)) from None


def _raw_layout(fields: Fields, size: int) -> tuple[tuple[int, ...], str]:
    shape_text, dtype = _utf8_field(fields, "shape"), _utf8_field(fields, "dtype")
    if shape_text is None or dtype is None:
        raise FrameError("malformed", "raw frames need 'shape' (H,W[,C]) and 'dtype' fields")
    try:
        shape = tuple(int(d) for d in shape_text.split(","))
    except ValueError:
        raise FrameError("malformed", f"shape {shape_text!r} is not H,W or H,W,C") from None
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)) \
            or min(shape) < 1:
        raise FrameError("malformed", f"shape {shape} must be H,W or H,W,C with C in 1, 3, 4")
    if dtype not in RAW_DTYPES:
        raise FrameError("malformed", f"dtype {dtype!r}: raw frames must be one of {RAW_DTYPES}")
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if expected != size:
        raise FrameError("malformed", f"raw data is {size} bytes but shape {shape} {dtype} "
                         f"needs {expected}")
    return shape, dtype


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Result:
    frame_id: str
    camera: str
    score: float
    is_anomaly: bool
    threshold: float | None
    model_version: str
    capture_ts: float
    queue_ms: float
    infer_ms: float
    latency_ms: float  # capture -> result published
    worker: str
    product_class: str | None = None
    mask: bytes | None = None  # PNG, 255 = anomalous pixel, at the model's input size
    part: str | None = None
    view: str | None = None

    @property
    def normalized(self) -> float | None:
        return None if self.threshold is None or self.threshold <= 0 else \
            self.score / self.threshold

    def to_fields(self) -> dict[str, bytes]:
        fields = {"v": SCHEMA_VERSION, "frame_id": self.frame_id, "camera": self.camera,
                  "score": f"{self.score:.6g}", "is_anomaly": "1" if self.is_anomaly else "0",
                  "threshold": "" if self.threshold is None else f"{self.threshold:.6g}",
                  "model_version": self.model_version, "ts": repr(self.capture_ts),
                  "queue_ms": f"{self.queue_ms:.2f}", "infer_ms": f"{self.infer_ms:.2f}",
                  "latency_ms": f"{self.latency_ms:.2f}", "worker": self.worker,
                  "class": self.product_class or ""}
        if self.part:
            fields["part"] = self.part
            fields["view"] = self.view or ""
        out = {k: v.encode() for k, v in fields.items()}
        if self.mask is not None:
            out["mask"] = self.mask
        return out

    def to_flat(self) -> list[str | bytes]:
        """The same fields as `to_fields`, as one flat [name, value, ...] list (what a script
        call takes; built without the dict and the per-field encode)."""
        out: list[str | bytes] = [
            "v", SCHEMA_VERSION, "frame_id", self.frame_id, "camera", self.camera,
            "score", f"{self.score:.6g}", "is_anomaly", "1" if self.is_anomaly else "0",
            "threshold", "" if self.threshold is None else f"{self.threshold:.6g}",
            "model_version", self.model_version, "ts", repr(self.capture_ts),
            "queue_ms", f"{self.queue_ms:.2f}", "infer_ms", f"{self.infer_ms:.2f}",
            "latency_ms", f"{self.latency_ms:.2f}", "worker", self.worker,
            "class", self.product_class or ""]
        if self.part:
            out += ["part", self.part, "view", self.view or ""]
        if self.mask is not None:
            out += ["mask", self.mask]
        return out

    @classmethod
    def from_fields(cls, fields: Fields) -> Result:
        t = _decoded({k: v for k, v in fields.items() if k not in (b"mask", "mask")})
        threshold = t.get("threshold") or None
        return cls(t["frame_id"], t["camera"], float(t["score"]), t["is_anomaly"] == "1",
                   None if threshold is None else float(threshold), t["model_version"],
                   float(t["ts"]), float(t["queue_ms"]), float(t["infer_ms"]),
                   float(t["latency_ms"]), t["worker"], t.get("class") or None,
                   _raw(fields, "mask"), t.get("part") or None, t.get("view") or None)


# ----------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Alert:
    alert_id: str
    line: str
    camera: str
    raised_ts: float
    rule: str  # "k/n"
    frame_ids: list[str]
    scores: list[float]
    result_ids: list[str]  # entries of rlr:results:{line}; the anomalous ones carry the mask
    model_version: str
    threshold: float | None
    product_class: str | None = None
    camera_health: tuple[str, ...] = ()  # the camera's raised health kinds when it was raised
    # the evidence kept with the alert (not lost when the frames stream is trimmed):
    # (frame id, JPEG thumbnail, mask PNG or None) of the window's anomalous frames
    evidence: tuple[tuple[str, bytes, bytes | None], ...] = ()

    def to_fields(self) -> dict[str, bytes]:
        fields = {"v": SCHEMA_VERSION, "alert_id": self.alert_id, "line": self.line,
                  "camera": self.camera, "ts": repr(self.raised_ts), "rule": self.rule,
                  "frame_ids": json.dumps(self.frame_ids), "scores": json.dumps(self.scores),
                  "result_ids": json.dumps(self.result_ids),
                  "model_version": self.model_version,
                  "threshold": "" if self.threshold is None else f"{self.threshold:.6g}",
                  "class": self.product_class or "",
                  "camera_health": ",".join(self.camera_health)}
        out = {k: v.encode() for k, v in fields.items()}
        if self.evidence:
            out["evidence"] = json.dumps([fid for fid, _, _ in self.evidence]).encode()
            for i, (_, image, mask) in enumerate(self.evidence):
                out[f"evidence:{i}:image"] = image
                if mask is not None:
                    out[f"evidence:{i}:mask"] = mask
        return out

    @classmethod
    def from_fields(cls, fields: Fields) -> Alert:
        t = _decoded(fields)
        threshold = t.get("threshold") or None
        return cls(t["alert_id"], t["line"], t["camera"], float(t["ts"]), t["rule"],
                   json.loads(t["frame_ids"]), json.loads(t["scores"]),
                   json.loads(t["result_ids"]), t["model_version"],
                   None if threshold is None else float(threshold), t.get("class") or None,
                   tuple(k for k in t.get("camera_health", "").split(",") if k))

    def to_json(self) -> dict:
        return {"type": "alert", "alert_id": self.alert_id, "line": self.line,
                "camera": self.camera,
                "ts": self.raised_ts, "rule": self.rule, "frame_ids": self.frame_ids,
                "scores": self.scores, "result_ids": self.result_ids,
                "model_version": self.model_version, "threshold": self.threshold,
                "class": self.product_class, "camera_health": list(self.camera_health),
                "camera_healthy": not self.camera_health}


# ----------------------------------------------------------------------------- camera health


@dataclass(frozen=True)
class HealthEvent:
    """A camera condition raised or cleared (`rlr:health:{line}`); `evidence` says what was
    measured, `since` when the condition started."""

    line: str
    camera: str
    kind: str
    state: str  # "raised" or "cleared"
    ts: float
    since: float
    evidence: dict = field(default_factory=dict)
    worker: str = ""

    def to_fields(self) -> dict[str, bytes]:
        fields = {"v": SCHEMA_VERSION, "line": self.line, "camera": self.camera,
                  "kind": self.kind, "state": self.state, "ts": repr(self.ts),
                  "since": repr(self.since), "evidence": json.dumps(self.evidence),
                  "worker": self.worker}
        return {k: v.encode() for k, v in fields.items()}

    @classmethod
    def from_fields(cls, fields: Fields) -> HealthEvent:
        t = _decoded(fields)
        return cls(t["line"], t["camera"], t["kind"], t["state"], float(t["ts"]),
                   float(t["since"]), json.loads(t.get("evidence") or "{}"), t.get("worker", ""))

    def to_json(self) -> dict:
        return {"type": "camera_health", "line": self.line, "camera": self.camera,
                "kind": self.kind, "state": self.state, "ts": self.ts, "since": self.since,
                "evidence": self.evidence, "worker": self.worker}


# ----------------------------------------------------------------------------- dead letters


@dataclass
class DeadLetter:
    source_id: str  # the entry id in the source stream
    reason: str
    detail: str
    worker: str
    ts: float
    deliveries: int = 1
    kind: str = "frame"  # or "alert" (a bridge gave up)
    original: dict = field(default_factory=dict)  # the entry's fields, payload kept if in bounds

    def to_fields(self) -> dict[str, bytes]:
        fields = {"v": SCHEMA_VERSION, "kind": self.kind, "source_id": self.source_id,
                  "reason": self.reason, "detail": self.detail, "worker": self.worker,
                  "ts": repr(self.ts), "deliveries": str(self.deliveries)}
        out: dict[str, bytes] = {k: v.encode() for k, v in fields.items()}
        for k, v in self.original.items():
            key = text(k)
            out[f"orig.{key}"] = v if isinstance(v, bytes) else str(v).encode()
        return out

    @classmethod
    def from_fields(cls, fields: Fields) -> DeadLetter:
        t = _decoded(fields)
        original = {k.removeprefix("orig."): v for k, v in t.items() if k.startswith("orig.")}
        return cls(t["source_id"], t["reason"], t["detail"], t["worker"], float(t["ts"]),
                   int(t["deliveries"]), t.get("kind", "frame"), original)


def keep_for_dead_letter(fields: Fields, max_payload_bytes: int) -> dict:
    """The entry's fields, with a payload over the size limit replaced by a note."""
    kept = {}
    for k, v in fields.items():
        key = text(k)
        if key == "data" and isinstance(v, bytes) and len(v) > max_payload_bytes:
            kept["data_dropped"] = f"{len(v)} bytes over the {max_payload_bytes} limit".encode()
        else:
            kept[key] = v
    return kept


def alert_evidence(fields: Fields) -> list[tuple[str, bytes, bytes | None]]:
    """The evidence stored with an alert entry: (frame id, JPEG, mask PNG or None) each."""
    try:
        ids = json.loads(_raw(fields, "evidence") or b"[]")
    except ValueError:
        return []
    out = []
    for i, fid in enumerate(ids if isinstance(ids, list) else []):
        image = _raw(fields, f"evidence:{i}:image")
        if image is not None:
            out.append((str(fid), image, _raw(fields, f"evidence:{i}:mask")))
    return out
