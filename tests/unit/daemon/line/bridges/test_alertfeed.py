"""The alert feed without Redis: reading alerts off the stream."""

from __future__ import annotations

import pytest

from daemon.errors import DeliveryError
from daemon.line.bridges.alertfeed import parse_alert
from daemon.wire.schema import Alert


def _alert(camera: str = "cam-1") -> Alert:
    return Alert("a-17", "line1", camera, 1714550000.5, "3/5", ["f1", "f2", "f3"],
                 [0.71, 0.93, 0.88], ["1-0", "2-0", "3-0"], "v3", 0.6, "washer")


def test_parse_alert_round_trips_and_refuses_other_versions():
    fields = _alert().to_fields()
    assert parse_alert(fields) == _alert()
    with pytest.raises(DeliveryError) as err:
        parse_alert({**fields, "v": b"2"})
    assert err.value.permanent and err.value.reason == "unsupported_version"
    with pytest.raises(DeliveryError) as err:
        parse_alert({k: v for k, v in fields.items() if k != "camera"})
    assert err.value.reason == "malformed"
