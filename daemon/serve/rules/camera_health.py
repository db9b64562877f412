"""Camera health: tell a camera gone wrong from a product gone wrong, from the frames themselves.

Per frame, on the decode threads, the image measures (`daemon.serve.camera_measures`). Per camera
(`CameraWatch`, on the worker's event loop): each condition is judged over the camera's last
`window` frames and raised when `raise_k` of them are bad, cleared when at most `clear_k` are
(hysteresis: a flickering condition raises once and clears once), and a raised condition stays
raised at least `health_min_hold_s` (capture time), so a camera that flickers is one raise, not a
raise and a clear every few frames. Sharpness and framing are relative to the camera's own
baseline, built from its first healthy frames, one baseline per product class the camera sees (a
smooth disc is not a blurred view of a striped part). Scores are watched too: the distribution over
a sliding window against the calibration normals' quantiles stored in the model (PSI), and the rate
of anomalous verdicts.

Kinds: `frozen`, `dark`, `bright`, `blur`, `shift`, `score_drift`, `alarm_rate`.
`CameraHealth` is the rule the publisher runs: the changes as health events, published through
the result sink (`rlr:health:{line}`), which announces each raise or clear once per line.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from daemon.serve.camera_measures import Measures, shift_against
from daemon.serve.rules.base import Emits, Fresh, Shared
from daemon.wire.schema import HealthEvent

if TYPE_CHECKING:  # the thresholds: RLR_HEALTH_*
    from daemon.serve.settings import CameraHealthSettings

IMAGE_KINDS = ("frozen", "dark", "bright", "blur", "shift")
SCORE_KINDS = ("score_drift", "alarm_rate")
KINDS = IMAGE_KINDS + SCORE_KINDS
MAX_CLASSES = 64  # baselines kept per camera; the least recently seen class is forgotten


class Change(NamedTuple):
    camera: str
    kind: str
    state: str  # "raised" or "cleared"
    ts: float
    evidence: dict


@dataclass
class Baseline:
    """A camera's reference framing and sharpness for one product class, learned from its
    first healthy frames of that class."""

    reference: np.ndarray | None = None  # (64, 64) float32, read by the decode threads
    sharpness: float | None = None
    learning: list[Measures] = field(default_factory=list)


@dataclass
class CameraWatch:
    """One camera's health over the frames this worker scores."""

    camera: str
    policy: CameraHealthSettings
    quantiles: dict[str, list[float]] = field(default_factory=dict)  # class -> deciles
    far: float | None = None
    baselines: dict[str, Baseline] = field(default_factory=dict)  # product class ("": none)
    raised: dict[str, float] = field(default_factory=dict)  # kind -> since
    _bad: dict[str, deque] = field(default_factory=dict)
    _prev: Measures | None = None
    _scores: deque = field(default_factory=deque)
    _alarms: deque = field(default_factory=deque)
    _last: dict[str, dict] = field(default_factory=dict)
    _seen: int = 0

    def observe(self, m: Measures, score: float, anomalous: bool, product_class: str | None,
                ts: float) -> list[Change]:
        """Judge one frame; the kinds that were raised or cleared by it."""
        p = self.policy
        base = self.baseline(product_class)
        bad = self._image_checks(m, base)
        prev, self._prev = self._prev, m
        exposed = not (bad["dark"][0] or bad["bright"][0])
        diff = None if prev is None else float(np.abs(m.signature - prev.signature).mean())
        frozen = exposed and diff is not None and m.dhash == prev.dhash \
            and diff <= p.health_frozen_mad
        bad["frozen"] = (frozen, {"signature_diff": None if diff is None else round(diff, 3)})
        if not any(flag for flag, _ in bad.values()) and base.sharpness is None:
            self._learn(m, base)
        for kind in ("blur", "shift"):
            bad.setdefault(kind, (False, self._last.get(kind, {})))
        changes = []
        for kind, (flag, evidence) in bad.items():
            window = self._bad.setdefault(kind, deque(maxlen=p.health_window))
            window.append(flag)
            self._last[kind] = evidence
            changes += self._judge(kind, sum(window), len(window) >= p.health_window, ts, evidence)
        changes += self._score_checks(score, anomalous, product_class, ts)
        return changes

    def reference(self, product_class: str | None) -> np.ndarray | None:
        """The framing reference of the class (None until learned); read by decode threads."""
        base = self.baselines.get(product_class or "")
        return None if base is None else base.reference

    def baseline(self, product_class: str | None) -> Baseline:
        key = product_class or ""
        base = self.baselines.pop(key, None) or Baseline()
        self.baselines[key] = base  # most recently seen last
        while len(self.baselines) > MAX_CLASSES:  # classes invented by a runaway producer
            self.baselines.pop(next(iter(self.baselines)))
        return base

    def _image_checks(self, m: Measures, base: Baseline) -> dict[str, tuple[bool, dict]]:
        """Exposure first: a black or white frame has no texture and no framing to judge, so
        blur, shift and repeats are judged (and counted good) only on exposed frames."""
        p = self.policy
        out = {"dark": (m.mean < p.health_dark_level or m.low > p.health_clipped_fraction,
                        {"mean": round(m.mean, 1), "clipped_low": round(m.low, 3)}),
               "bright": (m.mean > p.health_bright_level or m.high > p.health_clipped_fraction,
                          {"mean": round(m.mean, 1), "clipped_high": round(m.high, 3)})}
        if out["dark"][0] or out["bright"][0]:
            return out
        if base.sharpness:
            ratio = m.sharpness / base.sharpness
            out["blur"] = (ratio < p.health_blur_ratio, {"sharpness_ratio": round(ratio, 3)})
        if m.shift is None and base.reference is not None:
            # measured before the reference was learned (decoded ahead): do it now
            m = m._replace(shift=shift_against(base.reference, m.thumb))
        if m.shift is not None:
            dx, dy, response = m.shift
            moved = response >= p.health_shift_response and math.hypot(dx, dy) > p.health_shift_px
            out["shift"] = (moved, {"dx_px": round(dx, 1), "dy_px": round(dy, 1),
                                    "response": round(response, 3), "of_px": m.thumb.shape[0]})
        return out

    def _learn(self, m: Measures, base: Baseline) -> None:
        """The class's reference framing and sharpness, from its first healthy frames."""
        base.learning.append(m)
        if len(base.learning) >= self.policy.health_baseline_frames:
            base.sharpness = max(float(np.median([b.sharpness for b in base.learning])), 1e-6)
            base.reference = np.mean([b.thumb for b in base.learning],
                                     axis=0).astype(np.float32)
            base.learning = []

    def _held(self, kind: str, ts: float) -> bool:
        """Whether a raised `kind` must stay raised yet (RLR_HEALTH_MIN_HOLD_S)."""
        return ts - self.raised[kind] < self.policy.health_min_hold_s

    def _judge(self, kind: str, n_bad: int, full: bool, ts: float,
               evidence: dict) -> list[Change]:
        p = self.policy
        if kind not in self.raised and n_bad >= p.health_raise_k:
            self.raised[kind] = ts
            return [Change(self.camera, kind, "raised", ts,
                           {**evidence, "bad_frames": n_bad, "of": p.health_window})]
        if kind in self.raised and full and n_bad <= p.health_clear_k and \
                not self._held(kind, ts):
            since = self.raised.pop(kind)
            return [Change(self.camera, kind, "cleared", ts,
                           {**evidence, "bad_frames": n_bad, "of": p.health_window,
                            "since": since})]
        return []

    def _score_checks(self, score: float, anomalous: bool, product_class: str | None,
                      ts: float) -> list[Change]:
        p = self.policy
        out: list[Change] = []
        self._seen += 1
        deciles = self.quantiles.get(product_class or "") or self.quantiles.get("default")
        if deciles:
            self._scores.append(int(np.searchsorted(deciles, score, side="right")))
            if len(self._scores) > p.health_drift_window:
                self._scores.popleft()
            if len(self._scores) == p.health_drift_window and self._seen % 10 == 0:
                psi = population_stability(self._scores, len(deciles) + 1)
                evidence = {"psi": round(psi, 3), "window": p.health_drift_window}
                if psi > p.health_drift_psi:
                    out += self._set("score_drift", True, ts, evidence)
                elif psi < p.health_drift_clear_psi:
                    out += self._set("score_drift", False, ts, evidence)
        if self.far is not None:
            self._alarms.append(bool(anomalous))
            if len(self._alarms) > p.health_drift_window:
                self._alarms.popleft()
            if len(self._alarms) == p.health_drift_window and self._seen % 10 == 0:
                rate = sum(self._alarms) / len(self._alarms)
                limit = max(p.health_alarm_rate, 10 * self.far)
                evidence = {"rate": round(rate, 3), "limit": round(limit, 3),
                            "window": p.health_drift_window}
                if rate > limit:
                    out += self._set("alarm_rate", True, ts, evidence)
                elif rate <= limit / 2:
                    out += self._set("alarm_rate", False, ts, evidence)
        return out

    def _set(self, kind: str, bad: bool, ts: float, evidence: dict) -> list[Change]:
        """Raise or clear a window-level kind (its own hysteresis is in its thresholds)."""
        if bad and kind not in self.raised:
            self.raised[kind] = ts
            return [Change(self.camera, kind, "raised", ts, evidence)]
        if not bad and kind in self.raised and not self._held(kind, ts):
            since = self.raised.pop(kind)
            return [Change(self.camera, kind, "cleared", ts, {**evidence, "since": since})]
        return []


def population_stability(bins: Sequence[int], n_bins: int) -> float:
    """PSI of observed bin indices against equal expected shares (decile bins of normals)."""
    counts = np.bincount(np.asarray(bins, dtype=np.int64), minlength=n_bins)[:n_bins]
    actual = np.maximum(counts / max(len(bins), 1), 1e-4)
    expected = 1.0 / n_bins
    return float(np.sum((actual - expected) * np.log(actual / expected)))


class CameraHealth:
    """The camera-health rule: each new result's measures judged by its camera's watch, the
    raises and clears as health events. The watches are the worker's `CameraMonitor`'s (its
    decode threads read their reference framing); a raise already announced by another worker
    of the line is not announced again (the sink keeps the line's state)."""

    name = "camera_health"
    history = 0

    def __init__(self, monitor: Any, worker_id: str) -> None:
        self.monitor, self.worker_id = monitor, worker_id

    async def judge(self, batch: Sequence[Fresh], shared: Shared) -> Emits:
        events = []
        for f in batch:
            res = f.result
            events += [HealthEvent(f.line, c.camera, c.kind, c.state, c.ts,
                                   c.evidence.get("since", c.ts),
                                   {**c.evidence, "frame_id": res.frame_id}, self.worker_id)
                       for c in self.monitor.observe(
                           f.line, res.camera, f.measures, res.score, res.is_anomaly,
                           res.product_class, res.capture_ts, f.manifest, res.model_version)]
        return Emits(health=tuple(events))
