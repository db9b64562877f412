"""The part rule's steps on plain state (what the memory port runs; the Redis port's script
mirrors them, tests/integration/serve/test_parts.py runs the same cases on Redis)."""

from __future__ import annotations

import asyncio
import json

from daemon.serve.rules.parts import JoinRequest, PartJoin, Station, decide, join
from daemon.wire.schema import Result

STATION = Station(("top", "side"), 1000, "reject", "bracket@2", "BRK-1", "bracket")


def _res(part: str, view: str, ts: float, anomalous: bool = False, fid: str = "") -> Result:
    return Result(fid or f"{part}-{view}", "cam1", 2.0 if anomalous else 0.5, anomalous, 1.0,
                  "m-1", ts, 1.0, 2.0, 30.0, "w1", "bracket", None, part, view)


def _state():
    return {}, {}, {}


def test_the_last_view_completes_the_part_and_the_verdict_lists_every_view():
    parts, done, due = _state()
    first = join(parts, done, due, JoinRequest.of(_res("P1", "top", 100.0), "top", STATION), "r1")
    assert first.code == "open" and due == {"P1": 101_000}
    last = join(parts, done, due, JoinRequest.of(_res("P1", "side", 100.2, True), "side",
                                                 STATION), "r2")
    assert last.code == "complete"
    v = decide("line1", "P1", last.state, 100.5, "w1")
    assert (v.verdict, v.outcome, v.missing) == ("reject", "reject", ())
    assert v.views["top"]["result_id"] == "r1" and v.views["side"]["is_anomaly"]
    assert (v.recipe, v.product, v.product_class) == ("bracket@2", "BRK-1", "bracket")
    assert v.first_ts == 100.0 and v.total_ms == 500.0


def test_a_part_missing_a_view_is_incomplete_with_the_station_outcome():
    parts, done, due = _state()
    join(parts, done, due, JoinRequest.of(_res("P2", "top", 100.0), "top", STATION), "r1")
    v = decide("line1", "P2", parts["P2"], 101.5, "w1")
    assert (v.verdict, v.outcome, v.missing) == ("incomplete", "reject", ("side",))
    lenient = STATION._replace(incomplete="pass")
    parts, done, due = _state()
    join(parts, done, due, JoinRequest.of(_res("P3", "top", 100.0), "top", lenient), "r1")
    assert decide("line1", "P3", parts["P3"], 102.0, "w1").outcome == "pass"


def test_a_second_frame_for_a_view_is_a_duplicate_not_a_second_join():
    parts, done, due = _state()
    join(parts, done, due, JoinRequest.of(_res("P4", "top", 100.0), "top", STATION), "r1")
    again = join(parts, done, due, JoinRequest.of(_res("P4", "top", 100.1, fid="x"), "top",
                                                  STATION), "r9")
    assert again.code == "duplicate"
    assert json.loads(parts["P4"]["v:top"])["frame_id"] == "P4-top"


def test_late_views_and_reused_ids_after_the_part_was_decided():
    parts, done = {}, {"P5": "5-0 100000 101000"}  # decided; its deadline was 101.0 s
    late = join(parts, done, {}, JoinRequest.of(_res("P5", "side", 100.9), "side", STATION),
                "r3")
    assert late == ("late", None, "5-0") and parts == {}
    reused = join(parts, done, {}, JoinRequest.of(_res("P5", "top", 101.0), "top", STATION),
                  "r4")
    assert reused.code == "open" and parts["P5"]["_first"] == "101000"


def test_a_line_without_views_completes_a_part_with_its_one_view():
    parts, done, due = _state()
    one = Station((), 1000, "reject")
    got = join(parts, done, due, JoinRequest.of(_res("P6", "cam1", 100.0), "cam1", one), "r1")
    assert got.code == "complete"
    v = decide("line1", "P6", got.state, 100.1, "w1")
    assert v.verdict == "pass" and list(v.views) == ["cam1"] and v.recipe == ""


class _Due:
    def __init__(self, states):
        self.states = states

    async def due_parts(self, line, now_ms, count):
        return [(p, s) for p, s in self.states.get(line, []) if int(s["_deadline"]) <= now_ms]


def test_the_sweep_decides_parts_past_their_deadline_on_every_line():
    parts, done, due = _state()
    join(parts, done, due, JoinRequest.of(_res("P7", "top", 100.0), "top", STATION), "r1")
    rule = PartJoin("w1", ["line1", "line2"])
    out = asyncio.run(rule.tick(_Due({"line1": [("P7", parts["P7"])]})))
    assert [(v.line, v.part_id, v.verdict) for v in out.parts] == [("line1", "P7",
                                                                    "incomplete")]
