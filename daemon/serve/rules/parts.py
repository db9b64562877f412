"""The part rule: a station's views of one part joined into one part verdict.

A frame with a `part` id is one view of that part. Its result is joined to the part in the
same atomic step that publishes the result (the publish script of the Redis port; `join` here
for the memory port), so a result is never published without being joined, whichever worker
dies when. The part's state is the hash `rlr:part:{line}:<part>` (view -> its result, plus the
station it was opened under) and its deadline is in `rlr:partsdue:{line}`, both shared by
every worker of the line. When the last view joins, the rule decides the verdict; a part still
open at its deadline is decided by whichever worker's sweep (`tick`) finds it first. Emitting
the verdict (`emit_part`) is one atomic step too: it adds the entry to `rlr:parts:{line}`,
closes the part and leaves a `done` marker, and refuses when the part is already closed. So a
part gets exactly one verdict:

- a view delivered twice: the frame's result is published once (results are idempotent by
  camera and frame id) and joined once; a different frame for a view the part already has is
  a duplicate view (counted, not joined: the first one stands);
- a view that arrives after its part was decided (captured before the decided part's
  deadline) is late: its result is published, the verdict stands (counted, logged);
- a worker killed between views: the part's state is in Redis; the next view (any worker)
  joins it, or the sweep decides it at the deadline;
- a worker killed after the last view joined and before emitting: the part is complete and
  still open; the sweep emits its verdict (pass / reject, not incomplete) at the deadline;
- a part id used again (a counter wrapped around): a view captured at or after the decided
  part's deadline opens a new part with the same id; both verdicts carry their own `first_ts`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from daemon import logs
from daemon.serve.rules.base import Emits, Fresh
from daemon.wire.parts import PartVerdict

log = logs.get("rlr.worker")

# fields of the part's hash besides its views ("v:<view>" its result, "r:<view>" its id)
FIRST, DEADLINE, EXPECT, COUNT, META = "_first", "_deadline", "_expect", "_n", "_meta"


class Station(NamedTuple):
    """What makes a part complete on a line, and what to do when it is not: from the recipe
    in force at the part's trigger, or from the settings on a line without a recipe."""

    views: tuple[str, ...]  # () = any one view completes the part
    deadline_ms: int
    incomplete: str  # outcome of an incomplete part: reject / pass
    recipe: str = ""  # "name@revision"
    product: str = ""
    product_class: str = ""

    @property
    def expected(self) -> int:
        return len(self.views) or 1


class JoinRequest(NamedTuple):
    """One result joining its part (what the publish step is given besides the result)."""

    part: str
    view: str
    capture_ms: int
    deadline_ms: int  # absolute: the first capture + the station's deadline
    expected: int
    meta: str  # JSON: the station (views, outcome, recipe, product, class)
    view_json: str  # the view's result as the verdict lists it (without its result id)

    @classmethod
    def of(cls, res: Any, view: str, station: Station) -> JoinRequest:
        capture_ms = round(res.capture_ts * 1000)
        meta = json.dumps({"views": list(station.views), "incomplete": station.incomplete,
                           "recipe": station.recipe, "product": station.product,
                           "class": station.product_class}, separators=(",", ":"))
        summary = {"camera": res.camera, "frame_id": res.frame_id,
                   "score": round(res.score, 6), "threshold": res.threshold,
                   "is_anomaly": res.is_anomaly, "model_version": res.model_version,
                   "latency_ms": round(res.latency_ms, 2), "ts": res.capture_ts}
        return cls(res.part, view, capture_ms, capture_ms + station.deadline_ms,
                   station.expected, meta, json.dumps(summary, separators=(",", ":")))


class Joined(NamedTuple):
    """What joining did: `open` (waiting for more views), `complete` (`state` is the part's
    hash, every view in), `duplicate` (the part had that view), `late` (the part was decided:
    `done` is its verdict's entry id)."""

    code: str
    state: dict | None = None
    done: str | None = None


def join(parts: dict, done: Mapping[str, str], due: dict, req: JoinRequest,
         result_id: str) -> Joined:
    """The join step on plain dicts (the memory port's state; the Redis port's script does
    the same). `parts`: part -> hash, `done`: part -> done marker, `due`: part -> deadline."""
    marker = done.get(req.part)
    if marker is not None and req.capture_ms < int(marker.split(" ")[2]):
        return Joined("late", done=marker.split(" ")[0])
    state = parts.get(req.part)
    if state is None:
        state = parts[req.part] = {FIRST: str(req.capture_ms), DEADLINE: str(req.deadline_ms),
                                   EXPECT: str(req.expected), COUNT: "0", META: req.meta}
        due[req.part] = req.deadline_ms
    if f"v:{req.view}" in state:
        return Joined("duplicate")
    state[f"v:{req.view}"], state[f"r:{req.view}"] = req.view_json, result_id
    state[COUNT] = str(int(state[COUNT]) + 1)
    if int(state[COUNT]) >= int(state[EXPECT]):
        return Joined("complete", dict(state))
    return Joined("open")


def decide(line: str, part: str, state: Mapping, now: float, worker: str) -> PartVerdict:
    """The verdict of a part from its hash: reject when any view is anomalous, incomplete
    when a view of the station is missing (its outcome the station's), else pass."""
    t = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
                                                          else v) for k, v in state.items()}
    meta = json.loads(t.get(META) or "{}")
    views = {}
    for key, value in t.items():
        if key.startswith("v:"):
            view = json.loads(value)
            view["result_id"] = t.get(f"r:{key[2:]}", "")
            views[key[2:]] = view
    wanted = list(meta.get("views") or [])
    missing = tuple(v for v in wanted if v not in views) if wanted else \
        (() if views else ("?",))
    first = int(t.get(FIRST) or round(now * 1000)) / 1000
    if missing:
        verdict, outcome = "incomplete", meta.get("incomplete") or "reject"
    elif any(v.get("is_anomaly") for v in views.values()):
        verdict = outcome = "reject"
    else:
        verdict = outcome = "pass"
    return PartVerdict(line, part, verdict, outcome, now, first,
                       round(max(0.0, now - first) * 1000, 2), views, missing,
                       meta.get("recipe", ""), meta.get("product", ""), meta.get("class", ""),
                       worker)


class PartsShared(Protocol):
    async def due_parts(self, line: str, now_ms: int,
                        count: int) -> list[tuple[str, dict]]: ...


class PartJoin:
    """The rule: verdicts for the parts a batch completed, and (`tick`) for the parts past
    their deadline."""

    name = "parts"
    history = 0

    def __init__(self, worker_id: str, lines: Sequence[str], sweep_count: int = 100) -> None:
        self.worker_id, self.lines, self.sweep_count = worker_id, list(lines), sweep_count
        self._throttle = logs.Throttle(5.0)

    async def judge(self, batch: Sequence[Fresh], shared: Any) -> Emits:
        now, out = time.time(), []
        for f in batch:
            joined = f.published.joined
            if joined is None:
                continue
            if joined.code == "complete":
                out.append(decide(f.line, f.result.part, joined.state, now, self.worker_id))
            elif joined.code in ("late", "duplicate") and \
                    self._throttle.due((joined.code, f.line)):
                log.warning(f"part_view_{joined.code}", line=f.line, part=f.result.part,
                            view=f.result.view, camera=f.result.camera,
                            frame_id=f.result.frame_id, verdict=joined.done)
        return Emits(parts=tuple(out))

    async def tick(self, shared: Any) -> Emits:
        """Decide the parts whose deadline has passed (every worker sweeps; emitting is
        atomic, so a part two workers find is still decided once)."""
        now, out = time.time(), []
        for line in self.lines:
            for part, state in await shared.due_parts(line, int(now * 1000), self.sweep_count):
                out.append(decide(line, part, state, now, self.worker_id))
        return Emits(parts=tuple(out))
