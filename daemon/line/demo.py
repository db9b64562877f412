"""The one-command line demo: Redis, a model trained on the spot, a worker, simulated cameras,
and a live view of per-camera scores and alerts. Stops everything cleanly.

What the demo shows goes through a `DemoView` (the terminal one is `daemon.cli.demo`), so this
module runs the line and reads its streams but prints nothing itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import redis

from daemon.errors import DaemonError
from daemon.line.embedded import EmbeddedRedis, free_port
from daemon.wire import keys
from daemon.wire.schema import Alert, Result

CLASSES = ("fabric", "tile", "washer")


@dataclass
class CameraView:
    frames: int = 0
    anomalous: int = 0
    last: Result | None = None
    scores: deque = field(default_factory=lambda: deque(maxlen=20))
    alerts: int = 0


class DemoView(Protocol):
    """Where the demo reports: steps, live state, new alerts, the summary."""

    def step(self, title: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def show(self, cams: dict[str, CameraView], alerts: deque[Alert], left_s: float) -> None: ...

    def alert(self, alert: Alert) -> None: ...

    def summary(self, text: str) -> None: ...


def rlrctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", *args]


def prepare(workdir: Path, preset: str, epochs: int, size: int, view: DemoView) -> Path:
    """Synthetic data → trained model → calibrated thresholds → camera feeds (with progress)."""
    data, model = workdir / "data", workdir / "model.rlr"
    classes = ",".join(CLASSES)

    def synthetic(out: str, n_train: int, n_test: int, seed: int) -> list[str]:
        return rlrctl("synthetic", str(workdir / out), "--classes", classes, "--n-train",
                      str(n_train), "--n-test", str(n_test), "--size", str(size),
                      "--seed", str(seed))

    steps = [
        ("writing a synthetic 3-class training set", synthetic("data", 40, 2, 0)),
        # Thresholds set on a handful of held-out images are rough; a separate set of normal
        # images (as a plant would collect from the line) gives ~20 per class.
        ("writing normal images for calibration", synthetic("calib", 200, 0, 2)),
        ("writing unseen normal images for the camera feeds", synthetic("normal", 10, 0, 3)),
        (f"training one `{preset}` model for all classes ({epochs} epochs)", rlrctl(
            "train", "--data", str(data), "--preset", preset, "--epochs", str(epochs),
            "--out", str(model), "--cache-dir", str(workdir / "cache"))),
        ("calibrating alarm thresholds (1% false alarms)", rlrctl(
            "calibrate", "--model", str(model), "--data", str(workdir / "calib"),
            "--far", "0.01")),
    ]
    for title, cmd in steps:
        view.step(title)
        subprocess.run(cmd, check=True)
    write_feeds(workdir)
    return model


def write_feeds(workdir: Path) -> None:
    """Per camera, unseen normal images with the test defects spread among them."""
    for cls in CLASSES:
        normals = sorted((workdir / "normal" / cls / "train" / "good").glob("*.png"))
        defects = sorted(p for p in (workdir / "data" / cls / "test").glob("*/*.png")
                         if p.parent.name != "good")
        feed = workdir / "feeds" / cls
        shutil.rmtree(feed, ignore_errors=True)
        feed.mkdir(parents=True)
        order = [(i / len(normals), p) for i, p in enumerate(normals)]
        order += [((i + 0.5) / len(defects), p) for i, p in enumerate(defects)]
        for k, (_, src) in enumerate(sorted(order)):
            kind = "good" if src in normals else src.parent.name
            shutil.copyfile(src, feed / f"{k:03d}_{kind}.png")


class Line:
    """Child processes of the demo, all pointed at one Redis."""

    def __init__(self, workdir: Path, url: str, line: str, view: DemoView) -> None:
        self.view = view
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RLR_")}
        self.env.update({"RLR_REDIS_URL": url, "RLR_LINES": line, "RLR_LOG_FORMAT": "json"})
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], **env: str) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(rlrctl(*args), env={**self.env, **env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc))

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None and proc.returncode != 0:
                raise DaemonError(f"{name} exited with {proc.returncode}; see "
                                  f"{self.logs / (name + '.log')}")

    def stop(self, names: tuple[str, ...] | None = None, timeout: float = 30) -> None:
        chosen = [(n, p) for n, p in self.procs if names is None or n.startswith(names)]
        for _, proc in chosen:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for name, proc in chosen:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.view.warn(f"{name} did not stop in {timeout}s; killing it")
                proc.kill()
                proc.wait(5)


def run_demo(workdir: Path, seconds: float, fps: float, preset: str, epochs: int,
             model: Path | None, view: DemoView, console_port: int = 8780) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    size = 64 if preset == "tiny" else 256
    if model is None:
        model = prepare(workdir, preset, epochs, size, view)
    elif not (workdir / "feeds").is_dir():
        raise DaemonError(f"{workdir}/feeds is missing: run `rlrctl demo` once without --model "
                          "to write the data and the camera feeds")
    server = None
    url = os.environ.get("RLR_REDIS_URL")
    if url is None:
        view.step("starting an embedded Redis (set RLR_REDIS_URL to use yours)")
        server = EmbeddedRedis(workdir / "redis").start()
        url = server.url
    line_name = "demo"
    line = Line(workdir, url, line_name, view)
    client = redis.Redis.from_url(url)
    stopping = {"n": 0}

    def on_signal(signum, _frame) -> None:
        stopping["n"] += 1

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _clear(client, line_name)
        port = free_port()
        # OpenVINO scores `lite` about 3x faster than eager torch on a CPU (docs/engines.md):
        # with it one worker keeps up with the cameras and every frame is scored fresh.
        engine = "openvino" if importlib.util.find_spec("openvino") else "torch"
        view.step(f"starting a worker (engine {engine}, metrics on "
                  f"http://127.0.0.1:{port}/metrics) and {len(CLASSES)} cameras at {fps:g} fps")
        line.start("worker", ["worker", "--model", str(model), "--metrics-port", str(port)],
                   RLR_CONSUMER="demo-worker", RLR_ENGINE=engine,
                   RLR_ENGINE_CACHE=str(workdir / "engines"))
        _wait_ready(client, line, stopping)
        if console_port:
            _start_console(line, console_port, view)
        for cls in CLASSES:
            line.start(f"camera-{cls}", [
                "produce", "--source", str(workdir / "feeds" / cls), "--camera", f"cam-{cls}",
                "--class", cls, "--fps", str(fps), "--loop", "--encoding", "png"])
        _watch(client, line, line_name, seconds, stopping, view)
    finally:
        view.step("stopping cameras, worker and Redis")
        line.stop(("camera",))
        line.stop(("console",), timeout=10)
        line.stop(("worker",))
        text = _summary(client, line_name, workdir)
        if text:
            view.summary(text)
        client.close()
        if server is not None:
            server.stop()
        for s, handler in old.items():
            signal.signal(s, handler)


def _start_console(line: Line, port: int, view: DemoView) -> None:
    """`rlrctl console` as one more child (on `port`, or any free one when it is taken)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            port = free_port()
    line.start("console", ["console", "--port", str(port)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line.check()
        with socket.socket() as s, contextlib.suppress(OSError):
            s.settimeout(0.5)
            s.connect(("127.0.0.1", port))
            break
        time.sleep(0.2)
    url = f"http://127.0.0.1:{port}/"
    view.step(f"the line console: {url} (open it in a browser while the line runs)")
    show = getattr(view, "console", None)
    if show is not None:
        show(url)


def _clear(client: redis.Redis, line: str) -> None:
    for key in client.scan_iter(match=f"rlr:*{{{line}}}*"):
        client.delete(key)


def _wait_ready(client: redis.Redis, line: Line, stopping: dict) -> None:
    deadline = time.monotonic() + 120
    while b'"ready"' not in (client.get(keys.worker("demo-worker")) or b""):
        line.check()
        if stopping["n"] or time.monotonic() > deadline:
            raise DaemonError(f"the worker did not become ready; see {line.logs / 'worker.log'}")
        time.sleep(0.2)


def _watch(client: redis.Redis, line: Line, name: str, seconds: float, stopping: dict,
           view: DemoView) -> None:
    cams: dict[str, CameraView] = {}
    alerts: deque[Alert] = deque(maxlen=6)
    cursors = {keys.results(name): "0-0", keys.alerts(name): "0-0"}
    end = time.monotonic() + seconds
    next_draw = 0.0
    while time.monotonic() < end and not stopping["n"]:
        line.check()
        for key, entries in client.xread(cursors, block=200, count=500) or []:
            key = key.decode()
            for eid, fields in entries:
                cursors[key] = eid.decode()
                if key == keys.alerts(name):
                    alert = Alert.from_fields(fields)
                    alerts.append(alert)
                    cams.setdefault(alert.camera, CameraView()).alerts += 1
                    view.alert(alert)
                else:
                    _count(cams, Result.from_fields(fields))
        if time.monotonic() >= next_draw:
            next_draw = time.monotonic() + 1.0
            view.show(cams, alerts, end - time.monotonic())


def _count(cams: dict[str, CameraView], res: Result) -> None:
    view = cams.setdefault(res.camera, CameraView())
    view.frames += 1
    view.anomalous += res.is_anomaly
    view.last = res
    view.scores.append(res.normalized or 0.0)


def _summary(client: redis.Redis, name: str, workdir: Path) -> str | None:
    try:
        res = [Result.from_fields(f) for _, f in client.xrange(keys.results(name))]
        n_alerts = client.xlen(keys.alerts(name))
        n_dead = client.xlen(keys.dlq(name))
    except redis.RedisError:
        return None
    if not res:
        return "no frames were scored"
    lat = np.array([r.latency_ms for r in res])
    return (f"scored {len(res)} frames from {len({r.camera for r in res})} cameras: "
            f"{sum(r.is_anomaly for r in res)} anomalous, {n_alerts} alerts, {n_dead} "
            f"dead-lettered; latency p50 {np.percentile(lat, 50):.0f} ms, p99 "
            f"{np.percentile(lat, 99):.0f} ms. Logs: {workdir / 'logs'}")
