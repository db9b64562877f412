"""Camera health checks on synthetic camera faults, frame by frame: each fault is raised within
a bounded number of frames and cleared within a bounded number after it ends, once each; a
normal feed raises nothing. The cost per frame is asserted loosely (benchmarks measure it)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from daemon.serve.camera_measures import measure
from daemon.serve.rules.camera_health import CameraWatch, population_stability
from daemon.serve.settings import CameraHealthSettings

POLICY = CameraHealthSettings()  # the defaults: window 10, raise at 8 bad, clear at <= 2 bad
BASE = POLICY.health_baseline_frames


def _belt(size: int) -> np.ndarray:
    noise = np.random.default_rng(123).normal(0, 1, (size, size)).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), size / 40)
    return 100 + 40 * texture / texture.std()


def scene(i: int, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A part on a textured belt: the same framing every frame, a different part each time,
    sensor noise on top."""
    y, x = np.mgrid[0:size, 0:size]
    belt = _belt(size)
    cx, cy = size // 2 + (i * 7) % 9 - 4, size // 2 + (i * 5) % 7 - 3
    part = 60 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (size / 6) ** 2))
    gray = np.clip(belt + part + rng.normal(0, 4, (size, size)), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def faults() -> dict:
    return {
        "dark": lambda img, k: (img * 0.05).astype(np.uint8),  # the lamp died
        "bright": lambda img, k: np.full_like(img, 252),  # overexposed
        "blur": lambda img, k: cv2.GaussianBlur(img, (0, 0), 4),  # dusty or defocused lens
        "shift": lambda img, k: np.roll(img, (20, 22), axis=(0, 1)),  # the camera was knocked
    }


def run(watch: CameraWatch, frames, start: int = 0, score: float = 0.0) -> list:
    out = []
    for i, img in enumerate(frames, start):
        m = measure(img, watch.reference(None))
        out += [(i, c) for c in watch.observe(m, score, False, None, float(i))]
    return out


def test_a_normal_feed_raises_nothing():
    rng = np.random.default_rng(0)
    watch = CameraWatch("cam", POLICY)
    assert run(watch, (scene(i, rng) for i in range(400))) == []
    assert watch.reference(None) is not None and watch.baselines[""].sharpness > 0  # learned


@pytest.mark.parametrize("kind", sorted(faults()))
def test_each_image_fault_is_raised_and_cleared_once_within_bounds(kind):
    rng = np.random.default_rng(1)
    watch = CameraWatch("cam", POLICY)
    run(watch, (scene(i, rng) for i in range(BASE + 20)))
    start = BASE + 20
    fault = faults()[kind]
    during = run(watch, (fault(scene(i, rng), i) for i in range(start, start + 30)), start)
    after = run(watch, (scene(i, rng) for i in range(start + 30, start + 60)), start + 30)
    raised = [(i, c) for i, c in during if c.state == "raised"]
    assert [c.kind for _, c in raised] == [kind], during
    assert raised[0][0] - start < POLICY.health_raise_k + 1  # within 8 frames of the fault
    cleared = [(i, c) for i, c in after if c.state == "cleared"]
    assert [c.kind for _, c in cleared] == [kind], after
    assert cleared[0][0] - (start + 30) < POLICY.health_window  # within 10 frames of the end


def test_a_frozen_camera_is_raised_and_a_live_one_clears_it():
    rng = np.random.default_rng(2)
    watch = CameraWatch("cam", POLICY)
    run(watch, (scene(i, rng) for i in range(40)))
    stuck = scene(40, rng)
    during = run(watch, (stuck for _ in range(20)), 40)
    assert [(c.kind, c.state) for _, c in during] == [("frozen", "raised")]
    assert during[0][0] - 40 <= POLICY.health_raise_k + 1
    after = run(watch, (scene(i, rng) for i in range(60, 80)), 60)
    assert [(c.kind, c.state) for _, c in after] == [("frozen", "cleared")]


def test_a_flickering_lamp_raises_once_and_clears_once():
    rng = np.random.default_rng(3)
    watch = CameraWatch("cam", POLICY)
    run(watch, (scene(i, rng) for i in range(40)))
    # dark 9 frames of 10 for a while (a failing lamp), then fine
    frames = [(scene(i, rng) * (0.05 if i % 10 else 1)).astype(np.uint8) for i in range(40, 140)]
    changes = run(watch, frames, 40) + run(watch, (scene(i, rng) for i in range(140, 170)), 140)
    assert [(c.kind, c.state) for _, c in changes] == [("dark", "raised"), ("dark", "cleared")]


def product(kind: str, i: int, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """Three products one camera sees: a smooth disc (hardly any detail), dots, stripes."""
    y, x = np.mgrid[0:size, 0:size]
    c = size // 2 + (i % 5) - 2
    if kind == "disc":
        g = cv2.GaussianBlur((90 + 90 * (np.hypot(x - c, y - c) < size / 3)).astype(np.float32),
                             (0, 0), 3)
    elif kind == "dots":
        g = 90 + 120 * (((x + i) % 8 < 3) & ((y + i) % 8 < 3))
    else:
        g = 90 + 120 * (((x + 2 * i) // 4) % 2)
    g = np.clip(g + rng.normal(0, 3, (size, size)), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def test_a_camera_that_sees_three_products_raises_no_blur():
    # Runs of 20 of each: one baseline learned on dots and stripes called the disc blurred.
    rng = np.random.default_rng(4)
    watch = CameraWatch("cam", POLICY)
    changes, i = [], 0
    for _ in range(4):
        for kind in ("dots", "stripes", "disc"):
            for _ in range(20):
                m = measure(product(kind, i, rng), watch.reference(kind))
                changes += watch.observe(m, 0.0, False, kind, float(i))
                i += 1
    assert changes == []
    assert {k for k, b in watch.baselines.items() if b.sharpness} == {"dots", "stripes", "disc"}


def test_a_flickering_camera_is_damped_to_a_raise_not_a_raise_and_clear_per_cycle():
    # 8 dark / 8 normal frames x 10 at 10 frames/s: without a hold, 10 raises and 9 clears.
    rng = np.random.default_rng(5)
    watch = CameraWatch("cam", POLICY)
    run(watch, (scene(i, rng) for i in range(40)))
    changes = []
    for i in range(160):
        img = scene(i, rng)
        if (i // 8) % 2 == 0:
            img = (img * 0.05).astype(np.uint8)
        changes += watch.observe(measure(img, watch.reference(None)), 0.0, False, None,
                                 40 + i / 10)
    assert [(c.kind, c.state) for c in changes] == [("dark", "raised")]
    later = run(watch, (scene(i, rng) for i in range(100, 140)), 100)  # 1 s a frame: past hold
    assert [(c.kind, c.state) for _, c in later] == [("dark", "cleared")]


def test_a_gradual_brightness_drift_is_raised_when_it_gets_too_dark():
    rng = np.random.default_rng(4)
    watch = CameraWatch("cam", POLICY)
    frames = [(scene(i, rng) * max(0.0, 1 - i / 300)).astype(np.uint8) for i in range(300)]
    changes = run(watch, frames)
    assert [(c.kind, c.state) for _, c in changes] == [("dark", "raised")]
    i, change = changes[0]
    mean_at = float(np.mean(frames[i]))
    assert mean_at < POLICY.health_dark_level and change.evidence["mean"] < POLICY.health_dark_level


def test_score_drift_against_the_calibration_deciles():
    rng = np.random.default_rng(5)
    normals = rng.gamma(4, 0.05, 5000)
    deciles = [float(q) for q in np.quantile(normals, [i / 10 for i in range(1, 10)])]
    watch = CameraWatch("cam", POLICY, quantiles={"default": deciles}, far=0.01)
    img = measure(scene(0, rng))
    same = [c for s in rng.gamma(4, 0.05, 600)
            for c in watch.observe(img._replace(dhash=rng.integers(1 << 62)), float(s), False,
                                   None, 0.0) if c.kind == "score_drift"]
    assert same == []
    shifted = [(n, c) for n, s in enumerate(rng.gamma(4, 0.05, 400) + 0.5)
               for c in watch.observe(img._replace(dhash=rng.integers(1 << 62)), float(s), True,
                                      "unknown-class", 0.0)]
    kinds = {(c.kind, c.state) for _, c in shifted}
    assert ("score_drift", "raised") in kinds and ("alarm_rate", "raised") in kinds
    first = min(n for n, c in shifted if c.kind == "score_drift")
    assert first < POLICY.health_drift_window  # well within one window


def test_population_stability_is_zero_for_the_expected_shares_and_grows_with_a_shift():
    assert population_stability(list(range(10)) * 20, 10) == pytest.approx(0.0, abs=1e-9)
    assert population_stability([9] * 200, 10) > 5
    assert math.isfinite(population_stability([0, 0, 1], 10))


def test_measuring_a_frame_is_cheap():
    import time

    img = scene(0, np.random.default_rng(6), 256)
    ref = measure(img).thumb
    for _ in range(20):
        measure(img, ref)
    t0 = time.perf_counter()
    for _ in range(200):
        measure(img, ref)
    per_frame = (time.perf_counter() - t0) / 200
    assert per_frame < 0.005  # a few hundred us on a quiet machine; generous on a busy one


def test_a_camera_faster_than_the_measuring_rate_is_measured_at_that_rate():
    from daemon.serve.cameras import CameraMonitor

    img = scene(0, np.random.default_rng(7), 64)
    capped = CameraMonitor(CameraHealthSettings(health_max_fps=5))
    first = [capped.measure("line", "cam0", img) for _ in range(50)]  # a burst: one measured
    assert sum(m is not None for m in first) == 1
    assert capped.measure("line", "cam1", img) is not None  # each camera has its own rate
    # counted on capture time: frames captured at 20/s that reach the worker in one burst
    bursty = CameraMonitor(CameraHealthSettings(health_max_fps=30))
    assert all(bursty.measure("line", "cam0", img, 1000 + i / 20) is not None for i in range(20))
    every = CameraMonitor(CameraHealthSettings(health_max_fps=0))
    assert all(every.measure("line", "cam0", img) is not None for _ in range(50))


def test_the_rule_turns_each_raise_and_clear_into_a_health_event_of_its_frame():
    import asyncio

    from daemon.serve.ports import Published
    from daemon.serve.rules.base import Fresh
    from daemon.serve.rules.camera_health import CameraHealth, Change
    from daemon.wire.schema import Result

    class Monitor:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def observe(self, line, camera, m, score, anomalous, product_class, ts, manifest,
                    version):
            self.calls.append((line, camera, m, anomalous, manifest, version))
            if m is None:
                return []
            return [Change(camera, "dark", "raised", ts, {"mean": 3.0}),
                    Change(camera, "blur", "cleared", ts, {"since": 50.0})]

    def fresh(frame_id: str, measures) -> Fresh:
        res = Result(frame_id, "cam-a", 0.2, False, 0.5, "v1", 100.0, 1, 1, 1, "w1")
        return Fresh("line1", res, Published(True, "1-0", []), measures, {"metrics": {}})

    monitor = Monitor()
    out = asyncio.run(CameraHealth(monitor, "w1").judge(
        [fresh("f1", "measured"), fresh("f2", None)], shared=None))
    assert [(e.line, e.camera, e.kind, e.state, e.since, e.evidence["frame_id"], e.worker)
            for e in out.health] == [("line1", "cam-a", "dark", "raised", 100.0, "f1", "w1"),
                                     ("line1", "cam-a", "blur", "cleared", 50.0, "f1", "w1")]
    assert [c[2] for c in monitor.calls] == ["measured", None] and out.alerts == ()
