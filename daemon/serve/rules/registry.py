"""The rules a worker runs, in order: a new rule is one module in this folder and one line
here."""

from __future__ import annotations

from typing import Any

from daemon.serve.rules.alerts import AlertRule, KOfN
from daemon.serve.rules.base import Rule
from daemon.serve.rules.camera_health import CameraHealth


def build_rules(worker_id: str, alert_rule: AlertRule, cameras: Any = None) -> list[Rule]:
    """The worker's rules, in order: camera health first, so an alert of the same batch
    already names its camera's raised conditions. `cameras`: the worker's `CameraMonitor`
    (None: no camera health)."""
    rules: list[Rule] = []
    if cameras is not None:
        rules.append(CameraHealth(cameras, worker_id))
    rules.append(KOfN(alert_rule, camera_health=cameras is not None))
    return rules
