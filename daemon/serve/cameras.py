"""The worker's side of camera health: one `CameraWatch` per (line, camera) it scores frames of.

Measuring runs on the decode threads, beside decoding (`measure`); judging runs on the event
loop after a frame's result is published (`observe`), so the score and the verdict are known.
The changes it returns are published by the result sink, which also keeps the line's current
state in Redis: with several workers on a line each judges the frames it scores, and a raise
or clear is announced once (the first worker to see it). Calibration (the normals' score
deciles and the false-alarm rate) comes from the model serving the camera's frames.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np

from daemon import logs
from daemon.serve.camera_measures import Measures, measure
from daemon.serve.rules.camera_health import KINDS, CameraWatch, Change
from daemon.serve.settings import CameraHealthSettings

log = logs.get("rlr.worker")


class CameraMonitor:
    def __init__(self, settings: CameraHealthSettings, metrics: Any = None) -> None:
        self.enabled = settings.health
        self.policy = settings
        self.metrics = metrics
        self.watches: dict[tuple[str, str], CameraWatch] = {}
        self._calibration: dict[str, tuple[dict, float | None]] = {}  # version -> (deciles, far)
        # (line, camera) -> capture time of its last measured frame (RLR_HEALTH_MAX_FPS)
        self._period = 1.0 / settings.health_max_fps if settings.health_max_fps > 0 else 0.0
        self._measured_at: dict[tuple[str, str], float] = {}

    def measure(self, line: str, camera: str, image: np.ndarray, ts: float | None = None,
                product_class: str | None = None) -> Measures | None:
        """On a decode thread: the frame's measures (None when camera health is off, for a frame
        over the camera's RLR_HEALTH_MAX_FPS, or one that cannot be measured: it is scored all
        the same). The rate is counted on capture time `ts`: frames that reach the worker in
        bursts are measured as often as frames that arrive evenly."""
        if not self.enabled:
            return None
        if self._period:  # a camera faster than RLR_HEALTH_MAX_FPS is measured at that rate
            at = time.time() if ts is None else ts
            since = at - self._measured_at.get((line, camera), -math.inf)
            if 0 <= since < self._period:  # (a clock set back measures again at once)
                return None
            self._measured_at[(line, camera)] = at
        watch = self.watches.get((line, camera))
        try:
            return measure(image, None if watch is None else watch.reference(product_class))
        except Exception as exc:  # a measuring bug must never cost a frame its result
            log.warning("camera_measure_failed", camera=camera, error=f"{exc!r}")
            return None

    def measurer(self, lines: list[str]):
        """`measure` for a decode job whose i-th frame is of line `lines[i]`."""
        def measure_frame(i: int, frame, image: np.ndarray) -> Measures | None:
            return self.measure(lines[i], frame.camera, image, frame.ts, frame.product_class)
        return measure_frame

    def observe(self, line: str, camera: str, m: Measures | None, score: float,
                anomalous: bool, product_class: str | None, ts: float,
                manifest: dict | None, version: str) -> list[Change]:
        """On the event loop: judge one scored frame; the conditions it raised or cleared."""
        if m is None:
            return []
        watch = self.watches.get((line, camera))
        if watch is None:
            watch = self.watches[(line, camera)] = CameraWatch(camera, self.policy)
        watch.quantiles, watch.far = self._calibrated(manifest, version)
        return watch.observe(m, score, anomalous, product_class, ts)

    def raised(self, line: str, camera: str) -> tuple[str, ...]:
        watch = self.watches.get((line, camera))
        return () if watch is None else tuple(k for k in KINDS if k in watch.raised)

    def _calibrated(self, manifest: dict | None, version: str) -> tuple[dict, float | None]:
        if version not in self._calibration:
            cal: dict = {}
            with contextlib.suppress(AttributeError, TypeError):
                cal = (manifest or {}).get("metrics", {}).get("calibration") or {}
            deciles = {k: v for k, v in (cal.get("quantiles") or {}).items()
                       if isinstance(v, list) and len(v) >= 3}
            far = cal.get("far") if isinstance(cal.get("far"), (int, float)) else None
            self._calibration[version] = (deciles, far)
            if not deciles:
                log.info("score_drift_unwatched", version=version,
                         note="the model has no calibration deciles: run `rlrctl calibrate` "
                         "on it to watch score drift and alarm rate")
        return self._calibration[version]
