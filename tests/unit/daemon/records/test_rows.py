from __future__ import annotations

import json

import pytest

from daemon.records.rows import Unreadable, frame_row, part_row, recipe_row
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Result


def result(**kw) -> Result:
    base = dict(frame_id="f1", camera="cam0", score=1.5, is_anomaly=True, threshold=1.0,
                model_version="v3", capture_ts=1_796_601_600.123, queue_ms=1.0, infer_ms=2.0,
                latency_ms=12.5, worker="w1", product_class="bottle", mask=b"\x89PNG")
    return Result(**{**base, **kw})


def test_a_result_entry_becomes_its_row():
    fields = result().to_fields()
    row = frame_row("l1", "5-0", fields, recorded_ms=7)
    assert row == {"line": "l1", "camera": "cam0", "frame_id": "f1", "ts_ms": 1_796_601_600_123,
                   "score": 1.5, "threshold": 1.0, "is_anomaly": True, "model_version": "v3",
                   "latency_ms": 12.5, "product_class": "bottle", "part_id": None,
                   "view": None, "picture_ref": None, "mask_ref": None, "entry_id": "5-0",
                   "recorded_ms": 7}


def test_the_part_and_view_of_a_frame_are_kept():
    fields = {**result(threshold=None, product_class=None).to_fields(), b"part": b"SN-1",
              b"view": b"top"}
    row = frame_row("l1", "5-0", fields, 7)
    assert (row["part_id"], row["view"], row["threshold"], row["product_class"]) == \
        ("SN-1", "top", None, None)


def test_an_entry_that_is_not_a_result_is_unreadable():
    with pytest.raises(Unreadable, match="not a result"):
        frame_row("l1", "5-0", {b"v": b"1", b"junk": b"x"}, 7)
    with pytest.raises(Unreadable, match="UTF-8"):
        frame_row("l1", "5-0", {**result().to_fields(), b"part": b"\xff"}, 7)


def test_a_part_verdict_entry_becomes_its_row():
    views = {"top": {"camera": "cam0", "frame_id": "f1", "score": 0.4}}
    fields = {b"part_id": b"SN-40122", b"verdict": b"reject", b"ts": b"1796601600.5",
              b"first_ts": b"1796601600.25", b"total_ms": b"250", b"recipe": b"r7",
              b"views": json.dumps(views).encode()}
    row = part_row("l2", "9-0", fields, 3)
    assert row == {"line": "l2", "part_id": "SN-40122", "recipe": "r7", "product": None,
                   "verdict": "reject", "views": views, "first_ts_ms": 1_796_601_600_250,
                   "ts_ms": 1_796_601_600_500, "total_ms": 250.0, "entry_id": "9-0",
                   "recorded_ms": 3, "outcome": "reject", "missing": None,
                   "product_class": None}


def test_a_part_verdict_as_the_joiner_writes_it_keeps_outcome_missing_and_class():
    verdict = PartVerdict("l1", "SN-7", "incomplete", "pass", 1796601600.5, 1796601600.25,
                          250.0, {}, ("side", "end"), "r7@2", "bottle-a", "bottle")
    row = part_row("l1", "3-0", verdict.to_fields(), 1)
    assert (row["verdict"], row["outcome"], row["missing"], row["product_class"],
            row["recipe"], row["first_ts_ms"]) == \
        ("incomplete", "pass", "side,end", "bottle", "r7@2", 1_796_601_600_250)


def test_without_first_ts_the_decision_time_stands_in_and_outcome_follows_the_verdict():
    for verdict, outcome in (("pass", "pass"), ("reject", "reject"),
                             ("incomplete", "reject")):
        row = part_row("l", "1-0", {b"part_id": b"p", b"verdict": verdict.encode(),
                                    b"ts": b"2.5"}, 0)
        assert (row["first_ts_ms"], row["outcome"]) == (2500, outcome)


def test_a_recipe_log_entry_becomes_its_row():
    fields = {b"ts": b"1796601600.5", b"action": b"activated", b"name": b"bottle-a",
              b"revision": b"3", b"by": b"anna", b"via": b"cli", b"why": b""}
    assert recipe_row("l1", "4-0", fields, 9) == {
        "line": "l1", "ts_ms": 1_796_601_600_500, "action": "activated", "name": "bottle-a",
        "revision": 3, "by": "anna", "via": "cli", "why": None, "entry_id": "4-0",
        "recorded_ms": 9}
    refused = recipe_row("l1", "5-0", {b"ts": b"1", b"action": b"refused", b"name": b"nope",
                                       b"revision": b"", b"why": b"unknown recipe"}, 9)
    assert (refused["revision"], refused["why"]) == (None, "unknown recipe")


@pytest.mark.parametrize("fields, says", [
    ({b"ts": b"1", b"action": b"switched", b"name": b"r"}, "action"),
    ({b"ts": b"1", b"action": b"activated"}, "no recipe name"),
    ({b"action": b"activated", b"name": b"r"}, "no ts"),
    ({b"ts": b"1", b"action": b"activated", b"name": b"r", b"revision": b"x"}, "bad number"),
])
def test_a_bad_recipe_log_entry_says_why(fields, says):
    with pytest.raises(Unreadable, match=says):
        recipe_row("l", "1-0", fields, 0)


@pytest.mark.parametrize("fields, says", [
    ({b"verdict": b"pass", b"ts": b"1"}, "no part_id"),
    ({b"part_id": b"p", b"verdict": b"maybe", b"ts": b"1"}, "verdict"),
    ({b"part_id": b"p", b"verdict": b"pass"}, "no ts"),
    ({b"part_id": b"p", b"verdict": b"pass", b"ts": b"1", b"views": b"[1]"}, "JSON object"),
    ({b"part_id": b"p", b"verdict": b"pass", b"ts": b"x"}, "bad number"),
    ({b"part_id": b"p", b"verdict": b"pass", b"ts": b"1", b"outcome": b"rework"}, "outcome"),
])
def test_a_bad_part_verdict_entry_says_why(fields, says):
    with pytest.raises(Unreadable, match=says):
        part_row("l", "1-0", fields, 0)
