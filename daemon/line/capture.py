"""Capture frames of a live line into the MVTec-style training layout, so a new product
variant can be learned from the line itself (`rlrctl collect`).

Frames are read with plain XREAD (no consumer group), so collecting never takes frames away
from the workers. They are written as `OUT/<class>/train/good/<camera>-<frame_id>.png`, at
the model's input size by default: the same square resize the workers apply before scoring.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis
from PIL import Image

from daemon.errors import DaemonError, FrameError
from daemon.wire import keys
from daemon.wire.codec import decode_frame
from daemon.wire.groups import last_id, run_sync
from daemon.wire.schema import Frame, parse_frame
from daemon.wire.text import entry_field

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_WAITING = 500  # frames held back for a verdict (--only-normal), at most
_MAX_VERDICTS = 20_000  # verdicts remembered for frames not read yet


@dataclass
class CollectStats:
    written: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0  # malformed or undecodable frames, skipped
    other_class: int = 0  # frames of another product class than --class
    anomalous: int = 0  # --only-normal: flagged by the worker
    no_verdict: int = 0  # --only-normal: no result in time (skipped by backpressure, no worker)
    existing: int = 0  # already in OUT from an earlier run (same camera and frame id)
    seconds: float = 0.0

    def skipped(self) -> dict[str, int]:
        names = ("unreadable", "other_class", "anomalous", "no_verdict", "existing")
        return {k: getattr(self, k) for k in names if getattr(self, k)}


def safe_name(name: str) -> str:
    """A file or folder name from stream text: no separators, no leading dots."""
    return _UNSAFE.sub("_", name).lstrip(".") or "_"


def frame_path(out: Path, product_class: str, frame: Frame) -> Path:
    return (out / safe_name(product_class) / "train" / "good"
            / f"{safe_name(frame.camera)}-{safe_name(frame.frame_id)}.png")


class Collector:
    """Reads `rlr:frames:{line}` (and, with `only_normal`, `rlr:results:{line}`) and writes
    matching frames as PNG training images under `out`."""

    def __init__(self, client: redis.Redis, line: str, out: str | Path, *,
                 cameras: Iterable[str] | None = None, product_class: str | None = None,
                 size: int = 256, only_normal: bool = False, max_payload_bytes: int = 20_000_000,
                 max_side: int = 8192, verdict_wait_s: float = 30.0, block_ms: int = 500) -> None:
        if size < 16:
            raise DaemonError(f"image size {size} is too small; use 64 or more")
        self.client, self.line, self.out = client, line, Path(out)
        self.cameras = set(cameras) if cameras else None
        self.product_class, self.size, self.only_normal = product_class, size, only_normal
        self.max_payload_bytes, self.max_side = max_payload_bytes, max_side
        self.verdict_wait_s, self.block_ms = verdict_wait_s, block_ms
        self.stats = CollectStats()
        self._waiting: OrderedDict[str, tuple[Frame, str, float]] = OrderedDict()
        self._verdicts: OrderedDict[str, bool] = OrderedDict()  # frame id -> is_anomaly
        self._stopping = False

    def stop(self) -> None:
        """Return from `run()` after the current read; safe in a signal handler."""
        self._stopping = True

    def run(self, n: int, since: str = "$", max_seconds: float | None = None,
            on_write: Callable[[Path], None] | None = None) -> CollectStats:
        """Collect until `n` images are written, `max_seconds` pass, or `stop()`.

        `since`: "$" (frames from now on), "0" (everything still in the stream) or an id.
        """
        frames_key, results_key = keys.frames(self.line), keys.results(self.line)
        streams = {frames_key: since}
        if self.only_normal:
            streams[results_key] = since
        if since == "$":
            # Pin "$" to the current last id: a later "$" would skip what arrived in between.
            streams = {k: run_sync(self.client, last_id(k)) for k in streams}
        t0 = time.monotonic()
        try:
            while not self._stopping and self.stats.written < n:
                if max_seconds is not None and time.monotonic() - t0 > max_seconds:
                    break
                reply = self.client.xread(streams, count=100, block=self.block_ms)
                for key, entries in reply or []:
                    key = key.decode()
                    for entry_id, fields in entries:
                        streams[key] = entry_id.decode()
                        if self.stats.written >= n:
                            break
                        if key == frames_key:
                            self._frame(fields, on_write)
                        else:
                            self._verdict(fields, on_write)
                self._expire()
        finally:
            self.stats.seconds = time.monotonic() - t0
        return self.stats

    # ------------------------------------------------------------------ entries

    def _frame(self, fields: Mapping, on_write) -> None:
        try:
            frame = parse_frame(fields, self.max_payload_bytes)
        except FrameError:
            self.stats.unreadable += 1
            return
        if self.cameras is not None and frame.camera not in self.cameras:
            return
        if self.product_class and frame.product_class not in (None, self.product_class):
            self.stats.other_class += 1
            return
        cls = self.product_class or frame.product_class or frame.camera
        if not self.only_normal:
            self._write(frame, cls, on_write)
            return
        verdict = self._verdicts.pop(frame.frame_id, None)
        if verdict is None:
            self._waiting[frame.frame_id] = (frame, cls, time.monotonic())
            while len(self._waiting) > _MAX_WAITING:
                self._waiting.popitem(last=False)
                self.stats.no_verdict += 1
        elif verdict:
            self.stats.anomalous += 1
        else:
            self._write(frame, cls, on_write)

    def _verdict(self, fields: Mapping, on_write) -> None:
        frame_id = entry_field(fields, "frame_id")
        if frame_id is None:
            return
        is_anomaly = entry_field(fields, "is_anomaly") != "0"
        held = self._waiting.pop(frame_id, None)
        if held is None:  # the result came first (or is for a frame we do not want)
            self._verdicts[frame_id] = is_anomaly
            while len(self._verdicts) > _MAX_VERDICTS:
                self._verdicts.popitem(last=False)
        elif is_anomaly:
            self.stats.anomalous += 1
        else:
            self._write(held[0], held[1], on_write)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.verdict_wait_s
        while self._waiting:
            frame_id, (_, _, t) = next(iter(self._waiting.items()))
            if t > cutoff:
                break
            del self._waiting[frame_id]
            self.stats.no_verdict += 1

    def _write(self, frame: Frame, cls: str, on_write) -> None:
        path = frame_path(self.out, cls, frame)
        if path.exists():
            self.stats.existing += 1
            return
        try:
            image = decode_frame(frame, self.size, self.max_side)
        except FrameError:
            self.stats.unreadable += 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, path)  # a half-written PNG would break the training data check
        self.stats.written += 1
        self.stats.per_class[path.parts[-4]] = self.stats.per_class.get(path.parts[-4], 0) + 1
        if on_write is not None:
            on_write(path)
