"""The rules a worker runs, in order: a new rule is one module in this folder and one line
here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from daemon.serve.rules.alerts import AlertRule, KOfN
from daemon.serve.rules.base import Rule
from daemon.serve.rules.camera_health import CameraHealth
from daemon.serve.rules.parts import PartJoin


def build_rules(worker_id: str, alert_rule: AlertRule, cameras: Any = None,
                lines: Sequence[str] = ()) -> list[Rule]:
    """The worker's rules, in order: camera health first, so an alert of the same batch
    already names its camera's raised conditions; then the k-of-n alerts, then the part
    verdicts of `lines`. `cameras`: the worker's `CameraMonitor` (None: no camera health)."""
    rules: list[Rule] = []
    if cameras is not None:
        rules.append(CameraHealth(cameras, worker_id))
    rules.append(KOfN(alert_rule, camera_health=cameras is not None))
    rules.append(PartJoin(worker_id, lines))
    return rules
