"""The worker's chores on the memory port: parts joined while publishing, the stations loop
deciding the ones past their deadline, the recipes read as they switch."""

from __future__ import annotations

import time

from daemon.recipes.recipe import Activation, parse
from daemon.serve.worker import Worker
from tests.unit.daemon.serve.helpers import HIGH, LOW, Recording, frame, run, settings


def _verdicts(streams, line="line1"):
    return sorted((v.part_id, v.verdict, v.outcome, tuple(sorted(v.views)), v.missing)
                  for _, v in streams.parts[line])


def test_views_of_a_part_give_one_verdict_and_a_missing_view_gives_incomplete(engines):
    streams = Recording()
    now = time.time()
    for i, (part, view) in enumerate([("P1", "top"), ("P1", "side"), ("P2", "top"),
                                      ("P3", "side"), ("P3", "top")]):
        streams.add("line1", frame(i, ts=now, part=part, view=view))
    run(Worker(settings(part_views="top,side", part_deadline_ms=1500, part_sweep_ms=20),
               engines(default=HIGH), streams), idle_s=2.5)
    assert _verdicts(streams) == [
        ("P1", "pass", "pass", ("side", "top"), ()),
        ("P2", "incomplete", "reject", ("top",), ("side",)),
        ("P3", "pass", "pass", ("side", "top"), ())]


def test_a_view_outside_the_station_is_dead_lettered_and_anomalous_views_reject(engines):
    streams = Recording()
    now = time.time()
    streams.add("line1", frame(0, ts=now, part="P1", view="top"))
    streams.add("line1", frame(1, ts=now, part="P1", view="bottom"))
    streams.add("line1", frame(2, ts=now, part="P1", view="side"))
    run(Worker(settings(part_views="top,side"), engines(default=LOW), streams))
    assert [d.reason for d in streams.dlq["line1"]] == ["unknown_view"]
    assert _verdicts(streams) == [("P1", "reject", "reject", ("side", "top"), ())]


def test_the_recipe_sets_class_threshold_and_views_from_the_first_part_after_the_switch(
        engines):
    streams = Recording()
    recipe = parse({"name": "r", "product": "PR", "class": "fabric", "threshold": 1e12,
                    "views": [{"name": "a", "camera": "cam-a"}]})
    before = parse({"name": "p", "product": "PP", "class": "tile", "threshold": 1e-12,
                    "views": [{"name": "a"}]})
    switch = time.time() - 5
    streams.recipes["line1"] = Activation(
        line="line1", recipe=recipe, revision=3, since=switch,
        previous=Activation(line="line1", recipe=before, revision=1, since=0)).to_hash()
    streams.add("line1", frame(0, ts=switch - 1, part="OLD"))  # before the switch: p
    streams.add("line1", frame(1, ts=switch + 1, part="NEW"))
    run(Worker(settings(), engines(default=LOW), streams))
    by_part = {v.part_id: v for _, v in streams.parts["line1"]}
    assert by_part["NEW"].recipe == "r@3" and by_part["NEW"].product == "PR"
    assert by_part["NEW"].verdict == "pass"  # the recipe's threshold, not the model's
    assert by_part["NEW"].views["a"]["threshold"] == 1e12
    assert by_part["OLD"].recipe == "p@1" and by_part["OLD"].verdict == "reject"
    results = {res.part: res for _, res in streams.results["line1"]}
    assert results["NEW"].product_class == "fabric" and results["NEW"].view == "a"
