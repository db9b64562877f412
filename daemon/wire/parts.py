"""Part verdicts (`rlr:parts:{line}`, schema version 1.1): the station's one answer for a part
seen by one or more views. Written by the part rule (`daemon.serve.rules.parts`), read by the
bridges, the console and the recorder."""

from __future__ import annotations

import json
from dataclasses import dataclass

from daemon.wire.schema import SCHEMA_VERSION, Fields, _decoded

PART_VERDICTS = ("pass", "reject", "incomplete")
PART_OUTCOMES = ("pass", "reject")


@dataclass(frozen=True)
class PartVerdict:
    """The station's answer for one part (`rlr:parts:{line}`): `verdict` is what the views
    said (reject if any view is anomalous; incomplete when a view was missing at the
    deadline), `outcome` what the reject gate does (the verdict itself, or for an incomplete
    part the recipe's configured outcome: reject unless told otherwise).

    `views`: view name -> {camera, frame_id, score, threshold, is_anomaly, model_version,
    latency_ms, result_id}; `missing`: the station's views that never came."""

    line: str
    part_id: str
    verdict: str
    outcome: str
    ts: float  # when it was decided, seconds since the epoch
    first_ts: float  # the capture time of the part's first view (its trigger)
    total_ms: float  # first capture -> decided
    views: dict
    missing: tuple[str, ...] = ()
    recipe: str = ""  # the recipe's name and revision, "name@3" ("" when the line has none)
    product: str = ""
    product_class: str = ""
    worker: str = ""

    @property
    def rejected(self) -> bool:
        return self.outcome == "reject"

    def to_fields(self) -> dict[str, bytes]:
        fields = {"v": SCHEMA_VERSION, "line": self.line, "part_id": self.part_id,
                  "verdict": self.verdict, "outcome": self.outcome, "ts": repr(self.ts),
                  "first_ts": repr(self.first_ts), "total_ms": f"{self.total_ms:.2f}",
                  "views": json.dumps(self.views, separators=(",", ":")),
                  "missing": ",".join(self.missing), "recipe": self.recipe,
                  "product": self.product, "class": self.product_class,
                  "worker": self.worker}
        return {k: v.encode() for k, v in fields.items()}

    @classmethod
    def from_fields(cls, fields: Fields) -> PartVerdict:
        t = _decoded(fields)
        return cls(t.get("line", ""), t["part_id"], t["verdict"],
                   t.get("outcome") or ("reject" if t["verdict"] != "pass" else "pass"),
                   float(t["ts"]), float(t.get("first_ts") or t["ts"]),
                   float(t.get("total_ms") or 0.0), json.loads(t.get("views") or "{}"),
                   tuple(v for v in t.get("missing", "").split(",") if v),
                   t.get("recipe", ""), t.get("product", ""), t.get("class", ""),
                   t.get("worker", ""))

    def to_json(self) -> dict:
        return {"type": "part", "line": self.line, "part_id": self.part_id,
                "verdict": self.verdict, "outcome": self.outcome, "ts": self.ts,
                "first_ts": self.first_ts, "total_ms": self.total_ms, "views": self.views,
                "missing": list(self.missing), "recipe": self.recipe, "product": self.product,
                "class": self.product_class}
