"""Acquisition throughput: N emulated Basler cameras (pylon's camera emulator, PYLON_CAMEMU),
one producer process each, as `rlrctl produce --source pylon://SERIAL` runs them, pushing into
a real Redis. For each resolution: frames per second sustained per camera, CPU per frame (the
producer process: grab, conversion to RGB, encoding, XADD; the emulator drawing its test
image counts too, a real camera would not), and frames dropped (gaps in the cameras' frame
counters plus frames the producer dropped).

    python benchmarks/acquisition.py [--seconds 10] [--cameras 4] [--fps 30]
                                      [--redis-url redis://127.0.0.1:6379/0]

Needs pypylon (pip install 'rlr[pylon]') and a Redis server; writes to a throwaway line.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# width, height, pixel format, encoding, fps (None: --fps)
CASES = [
    (1280, 1024, "Mono8", "jpeg", None),
    (1280, 1024, "Mono8", "jpeg", 0),  # as fast as it goes: the limit
    (2448, 2048, "Mono8", "jpeg", None),
    (2448, 2048, "BayerRG8", "jpeg", None),
]


def _camera(index: int, case: tuple, fps: float, redis_url: str, line: str, seconds: float,
            results) -> None:
    """One producer process: camera `index` of the emulator for `seconds` after its first
    frame."""
    import redis

    from daemon import logs
    from daemon.line.camera import CameraConfig
    from daemon.line.producer import Producer
    from daemon.line.sources import open_source

    logs.configure("json", "error")
    width, height, pixel_format, encoding, _ = case
    config = CameraConfig(pixel_format=pixel_format, roi=(0, 0, width, height),
                          fps=fps or None)
    if not fps:  # the emulator's own rate is 100 fps: lift it
        config = CameraConfig(pixel_format=pixel_format, roi=(0, 0, width, height), fps=5000)
    source = open_source(f"pylon://0815-{index:04d}", camera=config)
    client = redis.Redis.from_url(redis_url)
    producer = Producer(client, line, f"cam{index}", fps=None, encoding=encoding,
                        frames_maxlen=50, progress_every_s=3600)
    mark: dict = {}

    def timed():
        for n, frame in enumerate(source):
            if n == 0:  # the camera is open and running: start the clocks
                mark.update(t=time.monotonic(), cpu=time.process_time())
                threading.Timer(seconds, producer.stop).start()
            yield frame

    stats = producer.run(timed())
    wall, cpu = time.monotonic() - mark["t"], time.process_time() - mark["cpu"]
    frames = max(stats.sent - 1, 1)  # the first frame started the clocks
    behind = max(0, round(fps * wall) - frames) if fps else 0
    results.put((index, frames / wall, cpu / frames * 1000, stats.lost_camera,
                 stats.dropped_offline + stats.dropped_late, stats.bytes / max(stats.sent, 1),
                 behind))


def run_case(case: tuple, cameras: int, fps: float, redis_url: str, seconds: float) -> list:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    line = f"bench{uuid.uuid4().hex[:8]}"
    target = fps if case[4] is None else case[4]
    procs = [ctx.Process(target=_camera, args=(i, case, target, redis_url, line, seconds,
                                                results)) for i in range(cameras)]
    for proc in procs:
        proc.start()
    rows, deadline = [], time.monotonic() + seconds + 180
    while len(rows) < len(procs):
        try:
            rows.append(results.get(timeout=1.0))
        except queue.Empty:
            if time.monotonic() > deadline or any(p.exitcode for p in procs):
                raise SystemExit("a producer failed or hung: see its output above") from None
    for proc in procs:
        proc.join(30)
    import redis

    from daemon.wire import keys

    redis.Redis.from_url(redis_url).delete(keys.frames(line))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--fps", type=float, default=30.0, help="free-run rate per camera")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    os.environ["PYLON_CAMEMU"] = str(max(args.cameras, 4))  # read by pylon in each producer
    print(f"{args.cameras} emulated cameras, {args.seconds:.0f} s each case, "
          f"{os.cpu_count()} CPUs\n")
    head = (f"{'case':<28} {'target':>7} {'fps/camera':>11} {'total fps':>10} "
            f"{'CPU ms/frame':>13} {'lost':>5} {'dropped':>8} {'behind':>7} {'KB/frame':>9} "
            f"{'CPUs for target':>16}")
    print(head)
    print("-" * len(head))
    for case in CASES:
        rows = run_case(case, args.cameras, args.fps, args.redis_url, args.seconds)
        target = args.fps if case[4] is None else case[4]
        rates = [r[1] for r in rows]
        label = f"{case[0]}x{case[1]} {case[2]} {case[3]}"
        cpu_ms = sum(r[2] for r in rows) / len(rows)
        need = f"{args.cameras * target * cpu_ms / 1000:.2f}" if target else "-"
        print(f"{label:<28} {target or 'max':>7} {min(rates):>5.1f}-{max(rates):<5.1f} "
              f"{sum(rates):>10.1f} {cpu_ms:>13.1f} {sum(r[3] for r in rows):>5} "
              f"{sum(r[4] for r in rows):>8} {sum(r[6] for r in rows):>7} "
              f"{sum(r[5] for r in rows) / len(rows) / 1000:>9.0f} {need:>16}", flush=True)
    print("\nlost: gaps in the cameras' frame counters; dropped: frames the producer dropped "
          "(Redis away);\nbehind: frames a camera free-running at the target would have had "
          "to drop (the emulator waits instead);\nCPUs for target: cameras x target fps x CPU "
          "per frame, the cores the producers need at that rate.")


if __name__ == "__main__":
    main()
