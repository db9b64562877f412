"""Per-camera alert rules: raise an alert when k of the camera's last n frames are anomalous,
then stay quiet for a cool-down. The window and the cool-down live in the result sink (Redis
for real lines), so every worker of a line sees the same camera history
(`daemon.serve.rules.window`); `KOfN` is the rule the publisher runs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.serve.rules.base import Emits, Fresh, Shared
from daemon.serve.rules.window import RecentFrame
from daemon.serve.settings import AlertSettings
from daemon.wire.schema import Alert


@dataclass(frozen=True)
class AlertRule:
    """The k-of-n rule and cool-down of `settings` (RLR_ALERT_K, RLR_ALERT_N,
    RLR_ALERT_COOLDOWN_S), applied to a camera's window."""

    settings: AlertSettings

    @property
    def k(self) -> int:
        return self.settings.alert_k

    @property
    def n(self) -> int:
        return self.settings.alert_n

    @property
    def cooldown_s(self) -> float:
        return self.settings.alert_cooldown_s

    @property
    def name(self) -> str:
        return f"{self.k}/{self.n}"

    def triggered(self, window: Sequence[RecentFrame]) -> bool:
        """`window`: the camera's most recent verdicts, newest first."""
        return sum(v.is_anomaly for v in window[: self.n]) >= self.k

    def evidence(self, window: Sequence[RecentFrame]) -> list[RecentFrame]:
        """The anomalous verdicts that made the alert, oldest first."""
        return [v for v in reversed(window[: self.n]) if v.is_anomaly]

    def build(self, line: str, camera: str, window: Sequence[RecentFrame], raised_ts: float,
              model_version: str, threshold: float | None,
              product_class: str | None, camera_health: Sequence[str] = ()) -> Alert:
        hits = self.evidence(window)
        return Alert(alert_id=uuid.uuid4().hex, line=line, camera=camera, raised_ts=raised_ts,
                     rule=self.name, frame_ids=[v.frame_id for v in hits],
                     scores=[v.score for v in hits], result_ids=[v.result_id for v in hits],
                     model_version=model_version, threshold=threshold,
                     product_class=product_class, camera_health=tuple(camera_health))


class KOfN:
    """The k-of-n alert rule: an alert per new anomalous result whose camera window fires,
    naming the camera's raised health conditions (read after this batch's health events)."""

    name = "k_of_n"

    def __init__(self, rule: AlertRule, camera_health: bool = True) -> None:
        self.rule, self.camera_health = rule, camera_health
        self.history = rule.n

    async def judge(self, batch: Sequence[Fresh], shared: Shared) -> Emits:
        alerts = []
        for f in batch:
            res, window = f.result, f.published.window
            if not (res.is_anomaly and self.rule.triggered(window)):
                continue
            unhealthy = await shared.camera_health(f.line, res.camera) \
                if self.camera_health else ()
            alerts.append((self.rule.build(f.line, res.camera, window, time.time(),
                                           res.model_version, res.threshold,
                                           res.product_class, unhealthy), self.rule.cooldown_s))
        return Emits(alerts=tuple(alerts))
