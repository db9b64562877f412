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
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Alert, Result

CLASSES = ("fabric", "tile", "washer")
# The demo line makes three products in turn (one recipe each, a changeover between them); its
# station has two cameras: cam-1 takes two views of each part, cam-2 one.
PRODUCTS = (("fabric-roll", "FAB-100", "fabric"), ("tile-white", "TIL-200", "tile"),
            ("washer-m8", "WSH-008", "washer"))
STATION = (("cam-1", ("top", "detail")), ("cam-2", ("side",)))
DEADLINE_MS = 5000


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
        # images (as a plant would collect from the line), used whole, gives 200 per class.
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


def write_recipes(workdir: Path) -> list[Path]:
    """One recipe file per product (what a plant engineer writes; `rlrctl recipe add`)."""
    folder = workdir / "recipes"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for number, (name, product, cls) in enumerate(PRODUCTS, 1):
        views = "".join(f'\n[[views]]\nname = "{v}"\ncamera = "{cam}"\n'
                        for cam, vs in STATION for v in vs)
        path = folder / f"{name}.toml"
        path.write_text(f'name = "{name}"\nnumber = {number}\nproduct = "{product}"\n'
                        f'class = "{cls}"\ndeadline_ms = {DEADLINE_MS}\nincomplete = "reject"\n'
                        f'description = "demo product {number}: {cls}"\n{views}')
        out.append(path)
    return out


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

    def wait_logged(self, name: str, event: str, timeout: float = 60) -> None:
        """Until child `name` logged `event` (its JSON log line)."""
        deadline, needle = time.monotonic() + timeout, f'"event": "{event}"'
        while needle not in (self.logs / f"{name}.log").read_text(errors="replace"):
            self.check()
            if time.monotonic() > deadline:
                raise DaemonError(f"{name} did not log {event} in {timeout:.0f}s; see "
                                  f"{self.logs / (name + '.log')}")
            time.sleep(0.1)

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
    records = workdir / "records"
    try:
        _clear(client, line_name)
        _start_worker(line, client, workdir, model, stopping, view)
        view.step(f"starting the recorder (SQLite records under {records})")
        line.start("recorder", ["recorder", "--migrate"], RLR_RECORDS_DIR=str(records))
        if console_port:
            _start_console(line, console_port, view)
        for path in write_recipes(workdir):
            subprocess.run(rlrctl("recipe", "add", str(path), "--by", "demo"), check=True,
                           env=line.env, stdout=subprocess.DEVNULL)
        each = seconds / len(PRODUCTS)
        for name, product, cls in PRODUCTS:
            if stopping["n"]:
                break
            _changeover(line, client, line_name, name, product, cls, workdir, fps, view)
            _watch(client, line, line_name, each, stopping, view, Triggers(
                client, line_name, product, fps))
            line.stop(("camera",))
        time.sleep(min(2.0, DEADLINE_MS / 1000))  # the last parts' verdicts
    finally:
        view.step("stopping cameras, worker, recorder and Redis")
        line.stop(("camera",))
        line.stop(("console",), timeout=10)
        line.stop(("worker",))
        line.stop(("recorder",))
        text = _summary(client, line_name, workdir, line.env)
        if text:
            view.summary(text)
        client.close()
        if server is not None:
            server.stop()
        for s, handler in old.items():
            signal.signal(s, handler)


def _start_worker(line: Line, client: redis.Redis, workdir: Path, model: Path, stopping: dict,
                  view: DemoView) -> None:
    port = free_port()
    # OpenVINO scores `lite` about 3x faster than eager torch on a CPU (docs/engines.md):
    # with it one worker keeps up with the cameras and every frame is scored fresh.
    engine = "openvino" if importlib.util.find_spec("openvino") else "torch"
    view.step(f"starting a worker (engine {engine}, metrics on "
              f"http://127.0.0.1:{port}/metrics)")
    line.start("worker", ["worker", "--model", str(model), "--metrics-port", str(port)],
               RLR_CONSUMER="demo-worker", RLR_ENGINE=engine,
               RLR_ENGINE_CACHE=str(workdir / "engines"))
    _wait_ready(client, line, stopping)


def _changeover(line: Line, client: redis.Redis, line_name: str, recipe: str, product: str,
                cls: str, workdir: Path, fps: float, view: DemoView) -> None:
    """Activate the product's recipe, then start the station's cameras on its parts."""
    view.step(f"changeover to {product} (recipe {recipe}, class {cls}): cameras "
              + ", ".join(f"{cam} ({' + '.join(vs)})" for cam, vs in STATION)
              + f", {fps:g} parts/s")
    subprocess.run(rlrctl("recipe", "activate", recipe, "--line", line_name, "--by", "demo"),
                   check=True, env=line.env, stdout=subprocess.DEVNULL)
    for cam, views in STATION:
        line.start(f"camera-{cam}-{cls}", [
            "produce", "--source", str(workdir / "feeds" / cls), "--camera", cam,
            "--part-from", "trigger", "--views", ",".join(views), "--loop",
            "--encoding", "png", "--fps", "0"])
    for cam, _ in STATION:  # a camera takes the triggers after it started: wait for it
        line.wait_logged(f"camera-{cam}-{cls}", "producer_started")


class Triggers:
    """The demo's PLC: one trigger per part at `fps`, part ids `<product>-<n>`."""

    def __init__(self, client: redis.Redis, line: str, product: str, fps: float) -> None:
        self.client, self.line, self.product, self.every = client, line, product, 1 / fps
        self.n, self.next = 0, time.monotonic()

    def __call__(self) -> None:
        while time.monotonic() >= self.next:
            self.n += 1
            self.client.xadd(keys.triggers(self.line), {
                "part_id": f"{self.product}-{self.n:05d}", "ts": repr(time.time()),
                "via": "demo"}, maxlen=10_000, approximate=True)
            self.next += self.every


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
           view: DemoView, tick=None) -> None:
    cams: dict[str, CameraView] = {}
    alerts: deque[Alert] = deque(maxlen=6)
    cursors = {keys.results(name): "$", keys.alerts(name): "$"}
    end = time.monotonic() + seconds
    next_draw = 0.0
    while time.monotonic() < end and not stopping["n"]:
        line.check()
        if tick is not None:
            tick()
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


def _summary(client: redis.Redis, name: str, workdir: Path, env: dict) -> str | None:
    try:
        res = [Result.from_fields(f) for _, f in client.xrange(keys.results(name))]
        parts = [PartVerdict.from_fields(f) for _, f in client.xrange(keys.parts(name))]
        n_alerts = client.xlen(keys.alerts(name))
        n_dead = client.xlen(keys.dlq(name))
    except redis.RedisError:
        return None
    if not res:
        return "no frames were scored"
    lat = np.array([r.latency_ms for r in res])
    by = {v: sum(p.verdict == v for p in parts) for v in ("pass", "reject", "incomplete")}
    table = subprocess.run(rlrctl("records", "yield", "--by", "hour", "--line", name,
                                  "--since", "1d"), env={**env, "RLR_RECORDS_DIR": str(
                                      workdir / "records")}, capture_output=True, text=True)
    return (f"scored {len(res)} frames from {len({r.camera for r in res})} cameras: "
            f"{sum(r.is_anomaly for r in res)} anomalous, {n_alerts} alerts, {n_dead} "
            f"dead-lettered; latency p50 {np.percentile(lat, 50):.0f} ms, p99 "
            f"{np.percentile(lat, 99):.0f} ms.\n"
            f"{len(parts)} parts: {by['pass']} pass, {by['reject']} reject, "
            f"{by['incomplete']} incomplete.\n\n"
            f"Yield from the records (`rlrctl records yield --by hour --line {name}`):\n"
            f"{table.stdout.strip() or table.stderr.strip()}\n\nLogs: {workdir / 'logs'}")
