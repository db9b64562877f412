"""The Sparkplug B bridge's pure parts: payloads and ids."""

from __future__ import annotations

import pytest

from daemon.errors import SettingsError
from daemon.line.bridges import sparkplug


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
