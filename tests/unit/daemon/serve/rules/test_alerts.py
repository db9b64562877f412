"""k-of-n alert rule per camera: when it fires, what evidence it carries."""

from __future__ import annotations

import asyncio

import pytest

from daemon.serve.ports import Published
from daemon.serve.rules.alerts import AlertRule, KOfN
from daemon.serve.rules.base import Fresh
from daemon.serve.rules.window import RecentFrame
from daemon.serve.settings import AlertSettings
from daemon.wire.schema import Result


def _window(flags: str) -> list[RecentFrame]:
    """Verdicts newest first from a string like "AN.A" (A = anomalous, anything else = not);
    frame ids count up with age: the newest is f0."""
    return [RecentFrame(f"f{i}", 1.0 if f == "A" else 0.1, f == "A", f"{i}-0", 100.0 - i)
            for i, f in enumerate(flags)]


@pytest.mark.parametrize("flags, fires", [
    ("AA", True),
    ("ANA", True),
    ("AAA", True),
    ("A", False),
    ("ANN", False),
    ("NNNAA", False),  # the anomalies are older than the last n=3
    ("NAAAA", True),
    ("", False),
])
def test_k_of_the_last_n_fires(flags, fires):
    assert AlertRule(AlertSettings(alert_k=2, alert_n=3)).triggered(_window(flags)) is fires


def test_evidence_is_the_anomalous_verdicts_oldest_first():
    rule = AlertRule(AlertSettings(alert_k=2, alert_n=3))
    hits = rule.evidence(_window("ANAA"))  # f3 is outside the window
    assert [v.frame_id for v in hits] == ["f2", "f0"]


@pytest.mark.parametrize("k, n", [(4, 3), (0, 3)])
def test_an_impossible_rule_is_refused(k, n):
    with pytest.raises(ValueError, match=r"(?i)alert_k"):
        AlertSettings(alert_k=k, alert_n=n)


def test_verdict_json_round_trip():
    v = RecentFrame("frame-7", 0.1234567, True, "1700000000000-3", 1_700_000_000.5)
    back = RecentFrame.from_json(v.to_json())
    assert back == RecentFrame("frame-7", 0.123457, True, "1700000000000-3", 1_700_000_000.5)
    assert RecentFrame.from_json(v.to_json().encode()) == back


def test_build_fills_the_alert_from_the_evidence():
    rule = AlertRule(AlertSettings(alert_k=2, alert_n=3, alert_cooldown_s=10))
    alert = rule.build("line1", "cam-1", _window("ANA"), 123.0, "sha256:abc", 0.5, "washer")
    assert (alert.line, alert.camera, alert.raised_ts, alert.rule) == \
        ("line1", "cam-1", 123.0, "2/3")
    assert alert.frame_ids == ["f2", "f0"]
    assert alert.result_ids == ["2-0", "0-0"]
    assert alert.scores == [1.0, 1.0]
    assert (alert.model_version, alert.threshold, alert.product_class) == \
        ("sha256:abc", 0.5, "washer")
    other = rule.build("line1", "cam-1", _window("ANA"), 123.0, "v", None, None)
    assert other.alert_id != alert.alert_id


def _fresh(frame_id: str, anomalous: bool, window: str, camera: str = "cam-1") -> Fresh:
    res = Result(frame_id, camera, 0.9 if anomalous else 0.1, anomalous, 0.5, "sha256:abc",
                 100.0, 1.0, 1.0, 1.0, "w1", "washer")
    return Fresh("line1", res, Published(True, "9-0", _window(window)))


class _Shared:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def camera_health(self, line: str, camera: str) -> tuple[str, ...]:
        self.asked.append((line, camera))
        return ("dark",)


def test_the_rule_alerts_on_each_new_anomalous_result_whose_window_fires():
    shared = _Shared()
    rule = KOfN(AlertRule(AlertSettings(alert_k=2, alert_n=3, alert_cooldown_s=7)))
    out = asyncio.run(rule.judge([_fresh("f0", True, "AA"), _fresh("g0", True, "ANN"),
                                  _fresh("h0", False, "AA"), _fresh("k0", True, "ANA", "cam-2")],
                                 shared))
    assert [(a.camera, a.frame_ids, a.camera_health, cooldown) for a, cooldown in out.alerts] \
        == [("cam-1", ["f1", "f0"], ("dark",), 7), ("cam-2", ["f2", "f0"], ("dark",), 7)]
    assert shared.asked == [("line1", "cam-1"), ("line1", "cam-2")]  # only for an alert
    assert out.health == () and rule.history == 3


def test_without_camera_health_the_rule_reads_nothing_shared():
    shared = _Shared()
    rule = KOfN(AlertRule(AlertSettings(alert_k=1, alert_n=1)), camera_health=False)
    out = asyncio.run(rule.judge(
        [_fresh("f0", True, "A")], shared))
    assert [a.camera_health for a, _ in out.alerts] == [()] and shared.asked == []
