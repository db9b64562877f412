"""What the console's thumbnails cost a worker, measured piece by piece.

A worker writes a camera's latest frame at most every RLR_THUMB_INTERVAL_S (0.5 s), so per
camera the cost is at most 1 / interval times (making the picture + one Redis write), off the
inference thread. This measures both parts on this machine and prints the worst-case share of
one CPU core for a line of N cameras (pipeline.py's end-to-end figures on a shared 2-core box
are too noisy to resolve a 1 % difference).

    python benchmarks/thumbnails.py [--cameras 32] [--interval 0.5] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np
import redis.asyncio

from daemon.cli.settings import load_settings
from daemon.line.embedded import EmbeddedRedis
from daemon.serve.redis_io import RedisStreams
from daemon.wire.codec import encode_image, thumbnail
from daemon.wire.schema import Frame


def per_call_ms(fn, seconds: float = 1.0) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n * 1000


def frames() -> dict[str, tuple[Frame, np.ndarray | None]]:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    big = rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    big[::8] = 0  # some structure, so the JPEG is not pure noise
    return {
        "JPEG 256 px (kept as it is)": (Frame("c", "f", 0.0, "jpeg",
                                              encode_image(small, "jpeg", 90)[0]), None),
        # what the worker does: the model's decoded 256 px input, encoded as JPEG
        "any other frame, model input 256 px": (Frame("c", "f", 0.0, "png",
                                                      encode_image(big, "png")[0]), small),
        "JPEG 1920x1080 decoded anew (avoided)": (Frame("c", "f", 0.0, "jpeg",
                                                encode_image(big, "jpeg", 90)[0]), None),
    }


async def redis_write_ms(url: str, cameras: int, rounds: int = 200) -> float:
    settings = load_settings(redis_url=url, lines="bench")
    sink = RedisStreams(redis.asyncio.Redis.from_url(url), settings, "bench")
    jpeg = encode_image(np.zeros((256, 256, 3), np.uint8), "jpeg")[0]
    items = [("bench", f"cam{i}", "f1", time.time(), jpeg) for i in range(cameras)]
    await sink.thumbnails(items, 10)
    t0 = time.perf_counter()
    for _ in range(rounds):
        await sink.thumbnails(items, 10)
    ms = (time.perf_counter() - t0) / rounds * 1000
    await sink.close()
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=32)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--redis-url")
    args = ap.parse_args()
    server = None
    if args.redis_url is None:
        server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="rlr-thumb-")) / "redis").start()
    url = args.redis_url or server.url
    try:
        write = asyncio.run(redis_write_ms(url, args.cameras))
        per_s = args.cameras / args.interval
        print(f"{args.cameras} cameras, a thumbnail each every {args.interval:g} s: "
              f"{per_s:.0f} thumbnails/s at most")
        print(f"Redis write of {args.cameras} thumbnails (one pipeline): {write:.2f} ms "
              f"-> {write / args.interval / 10:.2f} % of a core")
        for name, (frame, decoded) in frames().items():
            ms = per_call_ms(lambda f=frame, d=decoded: thumbnail(f, 256, 100_000, 8192, d))
            print(f"{name:<40} {ms:7.3f} ms each -> {ms * per_s / 10:6.2f} % of a core")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
