"""The Sparkplug B bridge's pure parts: payloads and ids."""

from __future__ import annotations

import pytest

from daemon.cli.settings import load_settings
from daemon.errors import SettingsError
from daemon.line.bridges import sparkplug
from daemon.line.bridges.linestate import PartState
from daemon.wire.parts import PartVerdict


def test_sparkplug_payload_round_trips_with_seq_and_types():
    raw = sparkplug.encode([("x", sparkplug.DOUBLE, 0.5), ("n", sparkplug.UINT64, 2**40),
                            ("ok", sparkplug.BOOLEAN, True), ("s", sparkplug.STRING, "é")],
                           seq=255, ts_ms=123)
    p = sparkplug.Payload.FromString(raw)
    assert p.seq == 255 and p.timestamp == 123
    assert [(m.name, m.datatype) for m in p.metrics] == [("x", 10), ("n", 8), ("ok", 11),
                                                         ("s", 12)]
    assert p.metrics[0].double_value == 0.5 and p.metrics[1].long_value == 2**40
    assert p.metrics[2].boolean_value and p.metrics[3].string_value == "é"
    assert not sparkplug.Payload.FromString(sparkplug.encode([], None)).HasField("seq")


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#"])
def test_sparkplug_ids_are_checked(bad):
    with pytest.raises(SettingsError):
        sparkplug.check_id(bad, "RLR_SPARKPLUG_GROUP")


def test_a_lines_last_part_is_a_set_of_node_metrics():
    edge = sparkplug.SparkplugEdge(load_settings(), ["line1"])
    empty = dict((n, v) for n, _, v in edge._part_metrics("line1"))
    assert empty == {"Part/line1/PartId": "", "Part/line1/Verdict": "none",
                     "Part/line1/Outcome": "none", "Part/line1/TotalMs": 0.0,
                     "Part/line1/Recipe": "", "Part/line1/Time": 0, "Part/line1/Count": 0}

    class Feed:
        def __init__(self) -> None:
            self.parts = {"line1": PartState("line1", PartVerdict(
                "line1", "SN-1", "incomplete", "reject", 2.5, 2.4, 100.0, {}, recipe="r@3"), 4)}

    edge.feed = Feed()
    metrics = {n: (t, v) for n, t, v in edge._part_metrics("line1")}
    assert metrics["Part/line1/PartId"] == (sparkplug.STRING, "SN-1")
    assert metrics["Part/line1/Verdict"][1] == "incomplete"
    assert metrics["Part/line1/Outcome"][1] == "reject"
    assert metrics["Part/line1/Time"] == (sparkplug.DATETIME, 2500)
    assert metrics["Part/line1/Count"] == (sparkplug.UINT64, 4)
    assert metrics["Part/line1/Recipe"][1] == "r@3"
    sparkplug.encode(list(edge._part_metrics("line1")), seq=1)  # every type encodes
