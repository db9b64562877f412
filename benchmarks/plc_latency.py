"""Reject-signal latency of the PLC / SCADA bridges, as a real client sees it.

Frames are XADDed at a paced rate over three cameras (the demo's rate, 3 cameras x 3 fps, and
10x that) to a real `rlrctl worker` (the `tiny` preset); a real `rlrctl bridge modbus` /
`rlrctl bridge opcua` process serves the line; a real client watches it:

- Modbus (pymodbus): polls every camera's register block every `--poll-ms` and notes when the
  camera's heartbeat register changes; the capture-time registers name the result it shows;
- OPC UA (asyncua): subscribes to every camera's `FrameId` (publishing interval
  `--poll-ms`) and notes when each notification arrives.

For every result the client saw: published -> visible (the result's stream entry id, Redis's
clock on this machine, to the client's wall clock) and capture -> visible. Results the client
never saw (a newer one replaced them before the next poll) are counted apart.

    python benchmarks/plc_latency.py [--seconds 20] [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import redis

from daemon.line.bridges.modbus import CAMERA_BLOCK
from daemon.line.embedded import EmbeddedRedis
from daemon.line.producer import push_images
from daemon.wire import keys
from daemon.wire.codec import encode_image
from daemon.wire.schema import Result
from rlr.artifact import save_artifact
from rlr.config import preset
from rlr.data import list_images, load_image, to_tensor
from rlr.model import create_model
from rlr.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[1]
CAMS = ("cam1", "cam2", "cam3")
DEMO_FPS = 9.0  # the demo: 3 cameras at 3 frames/s


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(url: str, lines: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLR_")}
    env.update({"RLR_REDIS_URL": url, "RLR_LINES": lines, "RLR_METRICS_PORT": "0",
                "RLR_BATCH_WAIT_MS": "5", "RLR_ALERT_COOLDOWN_S": "3600",
                "RLR_PLC_CAMERAS": ",".join(CAMS), "RLR_HEALTH": "false", **extra})
    return env


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", *args], env=env, cwd=ROOT,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def make_model(workdir: Path, images: list[np.ndarray]) -> Path:
    model = create_model(preset("tiny")).eval()
    scores = model.predict(to_tensor(images[:16])).score.numpy()
    path = workdir / "tiny.rlr"
    save_artifact(path, model, ["bench"], thresholds={"default": float(np.median(scores))})
    return path


def pace(client: redis.Redis, line: str, frames: list[bytes], fps: float, seconds: float,
         stop: list) -> None:
    period, t_next = 1.0 / fps, time.perf_counter()
    for i in range(int(fps * seconds)):
        t_next += period
        time.sleep(max(0.0, t_next - time.perf_counter()))
        push_images(client, line, CAMS[i % len(CAMS)], [frames[i % len(frames)]], maxlen=None)
    stop.append(True)


# ----------------------------------------------------------------------------- clients


def watch_modbus(port: int, poll_ms: float, stop: list) -> dict[tuple[str, int], float]:
    """(camera, capture time in ms) -> when the client first saw that result."""
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    while not client.connect():
        time.sleep(0.1)
    seen: dict[tuple[str, int], float] = {}
    last = [None] * len(CAMS)
    end = None
    while end is None or time.time() < end:
        if stop and end is None:
            end = time.time() + 3.0  # the last frames' results
        regs = client.read_holding_registers(CAMERA_BLOCK, count=CAMERA_BLOCK * len(CAMS))
        now = time.time()
        for i, cam in enumerate(CAMS):
            block = regs.registers[CAMERA_BLOCK * i:CAMERA_BLOCK * (i + 1)]
            if block[0] != last[i]:
                last[i] = block[0]
                capture_ms = ((block[10] << 16) | block[11]) * 1000 + block[12]
                seen.setdefault((cam, capture_ms), now)
        time.sleep(poll_ms / 1000)
    client.close()
    return seen


def watch_opcua(endpoint: str, line: str, poll_ms: float, stop: list) -> dict[str, float]:
    """frame id -> when the client's subscription delivered it."""
    import logging

    from asyncua import Client, ua

    logging.getLogger("asyncua").setLevel(logging.ERROR)

    seen: dict[str, float] = {}

    class Handler:
        def datachange_notification(self, node, val, data) -> None:
            seen.setdefault(val, time.time())

    async def run() -> None:
        client = Client(endpoint, timeout=5)
        while True:
            try:
                await client.connect()
                break
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.1)
        idx = await client.get_namespace_index("urn:rlr")
        sub = await client.create_subscription(poll_ms, Handler())
        await sub.subscribe_data_change([client.get_node(ua.NodeId(f"{line}.{c}.FrameId", idx))
                                         for c in CAMS])
        while not stop:
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0)
        await client.disconnect()

    asyncio.run(run())
    return seen


# ----------------------------------------------------------------------------- one phase


def phase(kind: str, url: str, line: str, frames: list[bytes], fps: float, seconds: float,
          poll_ms: float, work: Path) -> None:
    import threading

    client = redis.Redis.from_url(url)
    port = _port()
    extra = {"RLR_MODBUS_PORT": str(port)} if kind == "modbus" else \
        {"RLR_OPCUA_ENDPOINT": f"opc.tcp://127.0.0.1:{port}/rlr/"}
    bridge = _spawn(["bridge", kind, "--line", line], _env(url, line, **extra),
                    work / f"{kind}-{line}.log")
    stop: list = []
    out: dict = {}
    try:
        if kind == "modbus":
            watcher = threading.Thread(target=lambda: out.update(
                seen=watch_modbus(port, poll_ms, stop)))
        else:
            watcher = threading.Thread(target=lambda: out.update(
                seen=watch_opcua(f"opc.tcp://127.0.0.1:{port}/rlr/", line, poll_ms, stop)))
        watcher.start()
        time.sleep(3.0)  # the bridge and the client are up
        pace(client, line, frames, fps, seconds, stop)
        watcher.join(60)
    finally:
        _stop(bridge)
    seen = out.get("seen", {})
    pub, cap, missed = [], [], 0
    for eid, fields in client.xrange(keys.results(line)):
        r = Result.from_fields(fields)
        published = int(eid.decode().split("-")[0]) / 1000
        if kind == "opcua":
            t = seen.get(r.frame_id)
        else:  # the registers hold whole milliseconds: allow for float rounding
            ms = int(r.capture_ts * 1000)
            t = next((seen[k] for k in ((r.camera, ms), (r.camera, ms - 1), (r.camera, ms + 1))
                      if k in seen), None)
        if t is None:
            missed += 1
            continue
        pub.append((t - published) * 1000)
        cap.append((t - r.capture_ts) * 1000)
    pub_a, cap_a = np.array(pub), np.array(cap)
    if pub_a.size == 0:
        print(f"{kind:6} @ {fps:5.1f} fps: no result seen by the client (see {work})")
        return
    print(f"{kind:6} @ {fps:5.1f} fps, {pub_a.size} results seen ({missed} replaced before "
          f"a poll): published->visible p50 {np.percentile(pub_a, 50):6.1f} ms, p99 "
          f"{np.percentile(pub_a, 99):6.1f} ms, max {pub_a.max():6.1f} | capture->visible "
          f"p50 {np.percentile(cap_a, 50):6.1f} ms, p99 {np.percentile(cap_a, 99):6.1f} ms",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20, help="length of each phase")
    ap.add_argument("--poll-ms", type=float, default=10,
                    help="Modbus poll period / OPC UA publishing interval")
    ap.add_argument("--bridges", default="modbus,opcua")
    ap.add_argument("--rates", default=f"{DEMO_FPS:g},{10 * DEMO_FPS:g}",
                    help="frames/s over the three cameras")
    ap.add_argument("--redis-url", help="use this Redis instead of an embedded one")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rlr-plc-bench-"))
    size = preset("tiny").backbone.image_size
    data = write_dataset(work / "data", classes=["fabric", "tile", "wood"], n_train=8,
                         n_test_good=4, n_test_defect=4, size=size, seed=1, progress=False)
    images = [load_image(p, size) for p in list_images(sorted(data.glob("*/test")))]
    frames = [encode_image(img, "jpeg", 90)[0] for img in images]
    model = make_model(work, images)
    server = None if args.redis_url else EmbeddedRedis(work / "redis").start()
    url = args.redis_url or server.url
    client = redis.Redis.from_url(url)
    tag = uuid.uuid4().hex[:6]
    plan = [(kind, float(rate), f"plc{tag}{kind[:2]}{i}")
            for kind in args.bridges.split(",") for i, rate in enumerate(args.rates.split(","))]
    worker = _spawn(["worker"], _env(url, ",".join(line for _, _, line in plan),
                                     RLR_MODEL=str(model), RLR_CONSUMER="plc-bench-worker"),
                    work / "worker.log")
    print(f"tiny preset, {os.cpu_count()} CPUs, poll {args.poll_ms:g} ms, {args.seconds:g} s "
          f"per phase, logs in {work}", flush=True)
    try:
        deadline = time.monotonic() + 180
        while b'"ready"' not in (client.get(keys.worker("plc-bench-worker")) or b""):
            if worker.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"worker did not start; see {work}/worker.log")
            time.sleep(0.2)
        for kind, rate, line in plan:
            phase(kind, url, line, frames, rate, args.seconds, args.poll_ms, work)
    finally:
        _stop(worker)
        for _, _, line in plan:
            for key in client.scan_iter(match=f"rlr:*{{{line}}}*", count=1000):
                client.delete(key)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
