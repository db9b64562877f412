"""Helpers of the worker's unit tests: settings, frames, runs, a recording memory port."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from daemon.cli.settings import load_settings
from daemon.serve.memory_io import MemoryStreams
from daemon.serve.worker import Worker
from daemon.wire.codec import encode_image
from daemon.wire.schema import encode_frame

LOW, HIGH = 0.0, 1e9  # every frame anomalous / none


def settings(**kw):
    base = dict(metrics_port=0, consumer="w1", lines="line1", batch_size=4, batch_wait_ms=5,
                claim_interval_s=0.2, heartbeat_s=0.2, heartbeat_ttl_s=1, alert_k=2,
                alert_n=3, max_payload_bytes=8192, max_image_side=256)
    return load_settings(**{**base, **kw})


def frame(i: int, camera: str = "cam-a", encoding: str = "png", ts: float | None = None,
           size: int = 32, **kw) -> dict:
    img = np.zeros((size, size, 3), np.uint8)
    img[:, :, 0] = np.linspace(0, 255, size, dtype=np.uint8)[None, :]
    img[:, :, 1] = (i * 37) % 256
    data, extra = encode_image(img, encoding)
    return encode_frame(camera, f"{camera}-{i}", time.time() if ts is None else ts, data,
                        encoding, **extra, **kw)


def run(worker: Worker, idle_s: float = 0.3):
    return asyncio.run(worker.run_until_idle(idle_s=idle_s, timeout_s=60))


def results_of(streams: MemoryStreams, line: str = "line1"):
    return [res for _, res in streams.results[line]]


class Recording(MemoryStreams):
    """Memory streams that also record batch sizes and heartbeats."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches: list[int] = []
        self.beats: list[dict] = []

    async def publish(self, items, window_n, joins=()):
        self.batches.append(len(items))
        return await super().publish(items, window_n, joins)

    async def heartbeat(self, worker_id, status, ttl_s):
        self.beats.append(dict(status))
        await super().heartbeat(worker_id, status, ttl_s)
