"""The worker's rules and their order."""

from __future__ import annotations

from daemon.serve.rules.alerts import AlertRule, KOfN
from daemon.serve.rules.camera_health import CameraHealth
from daemon.serve.rules.parts import PartJoin
from daemon.serve.rules.registry import build_rules
from daemon.serve.settings import AlertSettings


def test_camera_health_runs_before_the_alerts_and_the_window_is_the_alert_rules():
    rules = build_rules("w1", AlertRule(AlertSettings(alert_k=2, alert_n=4)), cameras=object())
    assert [type(r) for r in rules] == [CameraHealth, KOfN, PartJoin]
    assert [r.history for r in rules] == [0, 4, 0]
    assert rules[1].camera_health


def test_without_camera_health_alerts_do_not_ask_for_it():
    rule, _ = build_rules("w1", AlertRule(AlertSettings()), cameras=None)
    assert isinstance(rule, KOfN) and not rule.camera_health
