"""Camera health through a real worker and a real Redis, with synthetic camera faults: each is
raised within a bounded number of frames and cleared within a bounded number after it ends;
normal feeds (the demo's kind of images, and ELPV cells) raise nothing over 2,000+ frames.
Alerts of an unhealthy camera say so; `rlrctl health` lists the state."""

from __future__ import annotations

import functools
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from daemon.cli import main
from daemon.line.producer import push_images
from daemon.wire import keys
from daemon.wire.schema import Alert, HealthEvent, Result
from tests.integration.procs import start_worker, wait_for, wait_ready

RAISE_WITHIN = 10  # frames after a fault starts (window 10, raised at 8 bad)
CLEAR_WITHIN = 12  # frames after it ends
DRIFT_WITHIN = 100  # frames: the drift window


@functools.cache
def _belt(size: int) -> np.ndarray:
    noise = np.random.default_rng(123).normal(0, 1, (size, size)).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), size / 40)
    return 100 + 40 * texture / texture.std()


def scene(i: int, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A part on a textured belt: the same framing every frame, a different part each time."""
    y, x = np.mgrid[0:size, 0:size]
    cx, cy = size // 2 + (i * 7) % 9 - 4, size // 2 + (i * 5) % 7 - 3
    part = 60 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (size / 6) ** 2))
    gray = np.clip(_belt(size) + part + rng.normal(0, 4, (size, size)), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


FAULTS = {
    "dark": lambda img: (img * 0.05).astype(np.uint8),
    "bright": lambda img: np.full_like(img, 252),
    "blur": lambda img: cv2.GaussianBlur(img, (0, 0), 4),
    "shift": lambda img: np.roll(img, (20, 22), axis=(0, 1)),
}


@pytest.fixture(scope="module")
def calibrated_model(tiny_artifact, tmp_path_factory):
    """The tiny model calibrated (thresholds and score deciles) on many synthetic normals."""
    import shutil

    from rlr.artifact import load_artifact, update_manifest
    from rlr.calibrate import calibrate_model
    from rlr.datasets import load_dataset
    from rlr.synthetic import write_dataset

    root = tmp_path_factory.mktemp("health")
    calib = write_dataset(root / "calib", classes=["fabric", "tile", "washer"], n_train=120,
                          n_test_good=0, n_test_defect=0, size=64, seed=2)
    path = root / "calibrated.rlr"
    shutil.copy(tiny_artifact, path)
    model = load_artifact(path).model
    cal = calibrate_model(model, list(load_dataset("folder", calib).train), 0.01, 32)
    update_manifest(path, thresholds=cal.thresholds, metrics=cal.manifest_fields()["metrics"])
    return path


def _events(rclient, line) -> list[HealthEvent]:
    return [HealthEvent.from_fields(f) for _, f in rclient.xrange(keys.health(line))]


def _push(rclient, line, camera, images, product_class=None) -> list[str]:
    """The frame ids of the images pushed, in order."""
    push_images(rclient, line, camera, images, encoding="png", product_class=product_class)
    return [f[b"frame_id"].decode() for _, f in rclient.xrange(keys.frames(line))
            if f[b"camera"] == camera.encode()][-len(images):]


def test_camera_faults_are_raised_and_cleared_within_bounds(rclient, redis_url, line,
                                                            calibrated_model, tmp_path):
    worker = start_worker(redis_url, line, calibrated_model, "w-health", tmp_path,
                          batch_size=8, backlog_limit=5000, frames_maxlen=20000,
                          health_max_fps=0, health_min_hold_s=0)  # frames come in a burst:
    # the hold time (capture time) would keep every condition raised; the bounds are in frames
    try:
        wait_ready(rclient, worker, names=("w-health",))
        rng = np.random.default_rng(0)
        pushed: dict[str, list[str]] = {}
        for kind, fault in FAULTS.items():
            frames = [scene(i, rng) for i in range(40)] + \
                [fault(scene(i, rng)) for i in range(40, 70)] + \
                [scene(i, rng) for i in range(70, 100)]
            pushed[kind] = _push(rclient, line, f"cam-{kind}", frames)
        stuck = scene(40, rng)
        frames = [scene(i, rng) for i in range(40)] + [stuck] * 30 + \
            [scene(i, rng) for i in range(70, 100)]
        pushed["frozen"] = _push(rclient, line, "cam-frozen", frames)
        ramp = [(scene(i, rng) * max(0.0, 1 - i / 120)).astype(np.uint8) for i in range(150)]
        pushed["ramp"] = _push(rclient, line, "cam-ramp", ramp)
        total = sum(len(v) for v in pushed.values())
        wait_for(lambda: rclient.xlen(keys.results(line)) >= total, 120, "every frame scored",
                 (worker,))
        events = _events(rclient, line)
        for kind in [*FAULTS, "frozen"]:
            mine = [e for e in events if e.camera == f"cam-{kind}"]
            assert [(e.kind, e.state) for e in mine] == [(kind, "raised"), (kind, "cleared")], \
                (kind, [(e.kind, e.state, e.evidence) for e in mine])
            raised_at = pushed[kind].index(mine[0].evidence["frame_id"]) - 40
            cleared_at = pushed[kind].index(mine[1].evidence["frame_id"]) - 70
            print(f"{kind}: raised {raised_at} frames after the fault started, cleared "
                  f"{cleared_at} frames after it ended")
            assert 0 <= raised_at < RAISE_WITHIN and 0 <= cleared_at < CLEAR_WITHIN, \
                (kind, raised_at, cleared_at)
        ramp_events = [e for e in events if e.camera == "cam-ramp"]
        assert [(e.kind, e.state) for e in ramp_events] == [("dark", "raised")]
        means = [float(img.mean()) for img in ramp]
        crossed = next(i for i, m in enumerate(means) if m < 25)  # RLR_HEALTH_DARK_LEVEL
        late = pushed["ramp"].index(ramp_events[0].evidence["frame_id"]) - crossed
        print(f"gradual darkening: raised {late} frames after crossing the dark level")
        assert 0 <= late < RAISE_WITHIN, late
        state = json.loads(rclient.hget(keys.camera_health(line), "cam-ramp"))
        assert set(state) == {"dark"}
        res = CliRunner().invoke(main, ["health", "--line", line, "--redis-url", redis_url])
        assert res.exit_code == 1 and "cam-ramp" in res.output and "dark" in res.output
    finally:
        worker.stop()


def test_score_drift_and_the_alerts_of_an_unhealthy_camera(rclient, redis_url, line,
                                                           calibrated_model, tmp_path,
                                                           synthetic_root):
    from rlr.data import list_images, load_image
    from rlr.synthetic import write_dataset

    normal_root = write_dataset(tmp_path / "normal", classes=["tile"], n_train=60,
                                n_test_good=0, n_test_defect=0, size=64, seed=3)
    normals = [load_image(p) for p in list_images([normal_root / "tile" / "train" / "good"])]
    rng = np.random.default_rng(1)
    other = [scene(i, rng, 64) for i in range(260)]  # another product in front of the camera
    worker = start_worker(redis_url, line, calibrated_model, "w-drift", tmp_path,
                          batch_size=8, backlog_limit=5000, frames_maxlen=20000,
                          health_max_fps=0, alert_cooldown_s=0, health_drift_window=100)
    try:
        wait_ready(rclient, worker, names=("w-drift",))
        _push(rclient, line, "cam-drift", (normals * 3)[:150], product_class="tile")
        _push(rclient, line, "cam-drift", other, product_class="tile")
        wait_for(lambda: rclient.xlen(keys.results(line)) >= 410, 120, "every frame scored",
                 (worker,))
        events = _events(rclient, line)
        drift = [e for e in events if e.kind == "score_drift"]
        assert drift and drift[0].state == "raised", [(e.kind, e.state) for e in events]
        assert drift[0].evidence["psi"] > 1.5
        order = {f[b"frame_id"].decode(): n
                 for n, (_, f) in enumerate(rclient.xrange(keys.frames(line)))}
        raised_at = order[drift[0].evidence["frame_id"]]
        assert 150 <= raised_at <= 150 + DRIFT_WITHIN, raised_at  # not before the product came
        print(f"score drift raised {raised_at - 150} frames after another product came")
        alerts = [Alert.from_fields(f) for _, f in rclient.xrange(keys.alerts(line))]
        late = [a for a in alerts if order[a.frame_ids[-1]] >= raised_at]
        assert late and all("score_drift" in a.camera_health for a in late), (
            raised_at, [(order[a.frame_ids[-1]], a.camera_health) for a in alerts])
        early = [a for a in alerts if order[a.frame_ids[-1]] < 150]
        assert all(not a.camera_health for a in early)
    finally:
        worker.stop()


@pytest.mark.slow
def test_normal_feeds_raise_no_health_event_over_2000_frames(rclient, redis_url, line,
                                                             calibrated_model, served_model,
                                                             tmp_path):
    """The demo's kind of normal images through a model calibrated for them (every check on,
    score drift and alarm rate included), and real ELPV cells through a model that was never
    calibrated on them (the image checks: its scores mean nothing for solar cells)."""
    from rlr.data import list_images, load_image
    from rlr.datasets import load_dataset
    from rlr.synthetic import write_dataset

    root = write_dataset(tmp_path / "feeds", classes=["fabric", "tile", "washer"],
                         n_train=240, n_test_good=0, n_test_defect=0, size=64, seed=3)
    cells_line = f"{line}-elpv"
    workers = [start_worker(redis_url, line, calibrated_model, "w-normal", tmp_path,
                            batch_size=16, backlog_limit=9000, frames_maxlen=20000,
                            health_max_fps=0),
               start_worker(redis_url, cells_line, served_model, "w-cells", tmp_path,
                            batch_size=16, backlog_limit=9000, frames_maxlen=20000,
                            health_max_fps=0)]
    try:
        wait_ready(rclient, *workers, names=("w-normal", "w-cells"))
        sent = {line: 0, cells_line: 0}
        for cls in ("fabric", "tile", "washer"):  # the demo's feeds: one camera per class
            images = [load_image(p) for p in list_images([root / cls / "train" / "good"])]
            for _ in range(3):  # replayed in a loop, as the demo's cameras do
                push_images(rclient, line, f"cam-{cls}", images, encoding="png",
                            product_class=cls)
                sent[line] += len(images)
        elpv = load_dataset("elpv", seed=0)
        for cls in ("mono", "poly"):  # real cells, one camera per cell type
            cells = [load_image(s.path, 128) for s in elpv.train if s.class_name == cls][:400]
            for _ in range(3):
                push_images(rclient, cells_line, f"elpv-{cls}", cells, encoding="png")
                sent[cells_line] += len(cells)
        assert min(sent.values()) >= 2000, sent
        for name, n in sent.items():
            wait_for(lambda name=name, n=n: rclient.xlen(keys.results(name)) >= n, 300,
                     f"every frame of {name} scored", tuple(workers))
            results = [Result.from_fields(f) for _, f in rclient.xrange(keys.results(name))]
            assert len({r.frame_id for r in results}) == n
            assert [(e.camera, e.kind, e.evidence) for e in _events(rclient, name)] == []
            assert rclient.hlen(keys.camera_health(name)) == 0
    finally:
        for w in workers:
            w.stop()
        for key in rclient.scan_iter(match=f"rlr:*{{{cells_line}}}*", count=1000):
            rclient.delete(key)


def test_a_camera_that_keeps_raising_and_clearing_trims_its_own_history_only(redis_url, line,
                                                                              rclient):
    import asyncio

    import redis

    from daemon.cli.settings import load_settings
    from daemon.serve.redis_io import RedisStreams

    async def go() -> None:
        s = load_settings(lines=line, consumer="w0", metrics_port=0, health_maxlen=10_000,
                          health_camera_maxlen=6)
        port = RedisStreams(redis.asyncio.Redis.from_url(redis_url), s, "w0")
        quiet = HealthEvent(line, "cam-quiet", "dark", "raised", 1.0, 1.0, {}, "w0")
        assert await port.publish_health([quiet]) == [True]
        for i in range(40):  # a flickering camera: raised, cleared, raised, ...
            state = "raised" if i % 2 == 0 else "cleared"
            await port.publish_health([HealthEvent(line, "cam-noisy", "dark", state,
                                                   2.0 + i, 2.0, {}, "w0")])
        await port.close()

    asyncio.run(go())
    events = [HealthEvent.from_fields(f) for _, f in rclient.xrange(keys.health(line))]
    by_camera = {c: [e for e in events if e.camera == c] for c in ("cam-quiet", "cam-noisy")}
    assert len(by_camera["cam-quiet"]) == 1  # still there
    assert len(by_camera["cam-noisy"]) == 6  # its own newest six
    assert by_camera["cam-noisy"][-1].ts == 41.0
    out = CliRunner().invoke(main, ["health", "--line", line, "--redis-url", redis_url])
    assert out.exit_code == 1 and "cam-quiet" in out.output  # 1: a camera is unhealthy
