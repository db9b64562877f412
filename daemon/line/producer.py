"""Camera producer: push a source's frames (`daemon.line.sources`) to `rlr:frames:{line}` at a
steady rate, surviving Redis and camera outages. With part ids (`daemon.line.part_ids`) each
frame carries its part and view: frame-driven kinds tag the frames as they come, part-driven
ones (a PLC's key or trigger) wait for a part and then take one frame per view."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import redis

from daemon import logs
from daemon.errors import DaemonError
from daemon.line.newest import Newest
from daemon.line.part_ids import NoPart, PartIds
from daemon.line.sources.base import Captured, nap
from daemon.wire import keys
from daemon.wire.backoff import Backoff
from daemon.wire.clients import away
from daemon.wire.codec import encode_image
from daemon.wire.schema import ENCODINGS, encode_frame
from rlr.data import resize

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


# ----------------------------------------------------------------------------- pacing


class Pacer:
    """A monotonic schedule at `fps`. Falling behind by more than a period resyncs the
    schedule and reports the missed ticks, instead of bursting frames to catch up."""

    def __init__(self, fps: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self.clock, self.sleep = clock, sleep
        self.next_t: float | None = None

    def wait(self) -> int:
        """Sleep until the next tick; return how many ticks were missed."""
        if not self.period:
            return 0
        now = self.clock()
        if self.next_t is None:
            self.next_t = now
        late, missed = now - self.next_t, 0
        if late > self.period:
            missed = int(late // self.period)
            self.next_t = now
        elif late < 0:
            self.sleep(-late)
        self.next_t += self.period
        return missed


# ----------------------------------------------------------------------------- producer


@dataclass
class ProducerStats:
    sent: int = 0
    dropped_late: int = 0  # schedule ticks missed because capture or XADD was too slow
    dropped_offline: int = 0  # frames captured while Redis was unreachable
    lost_camera: int = 0  # frames an industrial camera's frame counter skipped
    bytes: int = 0  # image payload sent
    elapsed: float = 0.0
    parts: int = 0  # parts whose frames were taken (with --part-from)
    skipped: int = 0  # frames or announced parts without a usable part id

    @property
    def fps(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise DaemonError(f"{kind} {name!r} is not a valid name: use 1-64 letters, digits, '_', "
                          "'.' or '-' (it becomes part of frame ids and Redis keys)")
    return name


class Producer:
    """Pushes captured frames of one camera to `rlr:frames:{line}`."""

    def __init__(self, client: redis.Redis, line: str, camera: str, *, fps: float | None = 5.0,
                 encoding: str = "jpeg", jpeg_quality: int = 90, size: int | None = None,
                 product_class: str | None = None, frames_maxlen: int = 10_000,
                 progress_every_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 backoff: Backoff | None = None, part_ids: PartIds | None = None) -> None:
        if encoding not in ENCODINGS:
            raise DaemonError(f"encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
        if not 1 <= jpeg_quality <= 100:
            raise DaemonError(f"JPEG quality {jpeg_quality} must be between 1 and 100")
        self.client, self.key = client, keys.frames(line)
        self.camera = check_name("camera", camera)
        self.encoding, self.quality, self.size = encoding, jpeg_quality, size
        self.product_class, self.maxlen = product_class, frames_maxlen
        # A fresh token per run: a restarted producer never reuses an id the worker has
        # already marked as done (results are idempotent by frame id).
        self.session = secrets.token_hex(4)
        self.clock, self.progress_every_s = clock, progress_every_s
        self.pacer = Pacer(fps, clock, lambda s: nap(s, self._is_stopped))
        self.backoff = backoff or Backoff(0.2, 2.0)  # short cap: every retry gap drops frames
        self.stats = ProducerStats()
        self.part_ids = part_ids
        self._skips = logs.Throttle(5.0)
        self._last_part: str | None = None
        self._seq = 0
        self._stopping = False
        self._source: Iterable[Captured] | None = None
        self._retry_at: float | None = None  # set while Redis is away
        self._log = logs.get().bind(session=self.session)

    def _is_stopped(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Finish the frame in flight and return from `run()`; safe in a signal handler."""
        self._stopping = True
        stop_source = getattr(self._source, "stop", None)
        if stop_source is not None:
            stop_source()  # a live source may be napping between reconnects

    def run(self, source: Iterable[Captured], limit: int | None = None) -> ProducerStats:
        """Send frames until `limit` are sent, the source ends, or `stop()`."""
        self._source = source
        start = self._last_t = self.clock()
        self._last_sent = 0
        try:
            if self.part_ids is not None and not self.part_ids.frame_driven:
                self._run_parts(source, limit)
            else:
                self._run_frames(iter(source), limit)
        finally:
            self.stats.elapsed = self.clock() - start
            self._log.info("producer_stopped", sent=self.stats.sent, fps=round(self.stats.fps, 2),
                           dropped_late=self.stats.dropped_late, parts=self.stats.parts,
                           skipped=self.stats.skipped,
                           dropped_offline=self.stats.dropped_offline,
                           lost_camera=self.stats.lost_camera, bytes=self.stats.bytes)
        return self.stats

    def _run_frames(self, frames: Iterator[Captured], limit: int | None) -> None:
        """At the pacer's rate: each frame as it comes, tagged when there are part ids."""
        while not self._stopping and (limit is None or self.stats.sent < limit):
            self.stats.dropped_late += self.pacer.wait()
            if self._stopping:
                break
            captured = next(frames, None)
            if captured is None:
                break
            self._lost(captured)
            part, view = captured.part, None  # a camera's own trigger names its part
            if self.part_ids is not None:
                try:
                    part, view = self.part_ids.tag(captured)
                except NoPart as exc:
                    self._skip(exc)
                    continue
                self.stats.parts += view is None or part != self._last_part
                self._last_part = part
            self.send(captured.image, time.time(), part, view, _camera_fields(captured))
            self._tick()

    def _run_parts(self, source: Iterable[Captured], limit: int | None) -> None:
        """At the PLC's rate: wait for a part id, then take one frame per view (the newest
        frames of a live camera, the next ones of a file source)."""
        assert self.part_ids is not None and not self.part_ids.frame_driven
        if getattr(source, "live", False):
            newest = Newest(source)
            self._source, take = newest, lambda: newest.take(self._is_stopped)
        else:
            frames = iter(source)
            take = lambda: next(frames, None)  # noqa: E731
        while not self._stopping and (limit is None or self.stats.sent < limit):
            try:
                part = self.part_ids.next_id(self._is_stopped)
            except NoPart as exc:
                self._skip(exc)
                continue
            if part is None:
                return
            self.stats.parts += 1
            for view in self.part_ids.views or (None,):
                captured = None if self._stopping else take()
                if captured is None:
                    self._log.warning("part_unfinished", part=part, view=view,
                                      why="the source ended or the producer stopped")
                    return
                self._lost(captured)
                self.send(captured.image, time.time(), part, view, _camera_fields(captured))
            self._tick()

    def _skip(self, exc: NoPart) -> None:
        """Count a frame or part without a usable id; warn at most every few seconds."""
        self.stats.skipped += 1
        if n := self._skips.due("no_part"):
            self._log.warning("part_id_skipped", error=str(exc), skipped=n,
                              skipped_total=self.stats.skipped)

    def _tick(self) -> None:
        now = self.clock()
        if now - self._last_t >= self.progress_every_s:
            self._progress(now - self._last_t, self.stats.sent - self._last_sent)
            self._last_t, self._last_sent = now, self.stats.sent

    def _lost(self, captured: Captured) -> None:
        if captured.lost:
            self.stats.lost_camera += captured.lost
            self._log.warning("camera_frames_lost", lost=captured.lost,
                              total=self.stats.lost_camera, cam_frame=captured.cam_frame)

    def send(self, image: np.ndarray, ts: float, part: str | None = None,
             view: str | None = None, camera_fields: dict[str, bytes] | None = None) -> bool:
        """Encode and XADD one frame (of `part`, as `view`); False when it was dropped because
        Redis is away. `camera_fields` (cam_ts, cam_frame) travel beside the schema's
        fields; readers ignore fields they do not know."""
        if self._retry_at is not None:
            if self.pacer.period == 0:  # as fast as possible: wait instead of spinning
                nap(self._retry_at - self.clock(), self._is_stopped)
            elif self.clock() < self._retry_at:
                self.stats.dropped_offline += 1  # a live camera cannot wait for Redis
                return False
        if self.size:
            image = resize(image, self.size)
        data, extra = encode_image(image, self.encoding, self.quality)
        self._seq += 1
        frame_id = f"{self.camera}-{self.session}-{self._seq}"
        fields = encode_frame(self.camera, frame_id, ts, data, self.encoding,
                              product_class=self.product_class, part=part, view=view, **extra)
        fields.update(camera_fields or {})
        try:
            self.client.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)
        except redis.RedisError as exc:
            if not away(exc):  # e.g. the key is not a stream: nothing a retry fixes
                raise DaemonError(f"Redis refused XADD to {self.key} ({exc}); check that the "
                                  "key is a stream (rlrctl status)") from None
            self._offline(exc)  # away, out of memory, disk full: drop frames until it is back
            return False
        except OSError as exc:
            self._offline(exc)
            return False
        if self._retry_at is not None:
            self._log.info("redis_back", dropped_offline=self.stats.dropped_offline)
            self._retry_at = None
            self.backoff.reset()
        self.stats.sent += 1
        self.stats.bytes += len(data)
        return True

    def _offline(self, exc: Exception) -> None:
        delay = self.backoff.next()
        if self._retry_at is None:
            self._log.warning("redis_unavailable", error=str(exc) or type(exc).__name__)
        self._retry_at = self.clock() + delay
        self.stats.dropped_offline += 1

    def _progress(self, dt: float, sent: int) -> None:
        self._log.info("producer_progress", sent=self.stats.sent, fps=round(sent / dt, 2),
                       dropped_late=self.stats.dropped_late,
                       dropped_offline=self.stats.dropped_offline,
                       lost_camera=self.stats.lost_camera, mbytes=round(self.stats.bytes / 1e6, 2))


def _camera_fields(captured: Captured) -> dict[str, bytes]:
    """The camera's own clock and frame counter, when the source has them."""
    out = {}
    if captured.cam_ts is not None:
        out["cam_ts"] = str(int(captured.cam_ts)).encode()
    if captured.cam_frame is not None:
        out["cam_frame"] = str(int(captured.cam_frame)).encode()
    return out


def push_images(client: redis.Redis, line: str, camera: str,
                images: Sequence[np.ndarray | bytes], *, encoding: str = "jpeg",
                quality: int = 90, product_class: str | None = None,
                maxlen: int | None = 10_000, chunk: int = 256) -> list[str]:
    """XADD many frames in pipelined chunks (tests, benchmarks); returns their frame ids.

    Items are RGB arrays (encoded here) or bytes already encoded as `encoding` (jpeg/png).
    """
    session = secrets.token_hex(4)
    pipe = client.pipeline(transaction=False)
    ids: list[str] = []
    for i, item in enumerate(images, 1):
        if isinstance(item, bytes):
            if encoding == "raw":
                raise DaemonError("push_images: raw frames need arrays (shape and dtype)")
            data, extra = item, {}
        else:
            data, extra = encode_image(item, encoding, quality)
        frame_id = f"{camera}-{session}-{i}"
        pipe.xadd(keys.frames(line), encode_frame(camera, frame_id, time.time(), data, encoding,
                                                  product_class=product_class, **extra),
                  maxlen=maxlen, approximate=True)
        ids.append(frame_id)
        if len(pipe) >= chunk:
            pipe.execute()
    pipe.execute()
    return ids
