"""One reader per stream, fanned out: the console's single view of the line.

`Hub.run` reads each line's results, alerts and health streams with one blocking XREAD, polls
the cameras' thumbnails (one pipelined round trip per line, the picture itself only when it
changed), the cameras' health state, and the workers' and jobs' status every few seconds. What
it read is kept in memory (the last few hundred scores per camera) and pushed to every
subscribed page as a small JSON event; a page that does not keep up is dropped (its browser
reconnects and gets a fresh snapshot), so one slow screen never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from daemon import logs
from daemon.console import views
from daemon.console.views import alert_json
from daemon.wire import keys
from daemon.wire.schema import Result
from daemon.wire.text import text

log = logs.get("rlr.console")

HISTORY = 300  # scores per camera for the sparkline
MASKS_KEPT = 16  # masks of recent anomalous frames per camera (for the heat map on the tile)
QUEUE = 200  # events a page may fall behind before it is dropped
MAX_CAMERAS = 2000  # tiles kept in memory, all lines together: the least recently seen goes
SNAPSHOT_BYTES = 512_000  # a new page's first event at most (see `Hub.snapshot`)
EVICT_LOG_S = 10.0  # evictions are logged at most this often (with how many since)


def _ms(entry_id: str) -> float:
    """The publish time (seconds) a stream entry id carries."""
    return int(entry_id.split("-", 1)[0]) / 1000


@dataclass(eq=False)  # identity: a camera is a key of the changed-tiles map
class Camera:
    line: str
    name: str
    scores: deque = field(default_factory=lambda: deque(maxlen=HISTORY))  # [score, thr, anom]
    latencies: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    published: deque = field(default_factory=lambda: deque(maxlen=HISTORY))  # publish times
    last: dict = field(default_factory=dict)
    masks: OrderedDict = field(default_factory=OrderedDict)  # frame id -> mask PNG
    thumb: tuple[str, float, bytes] | None = None  # frame id, capture ts, JPEG
    thumb_version: int = 0
    health: dict = field(default_factory=dict)

    def add(self, rid: str, res: Result) -> list:
        point = [round(res.score, 6), res.threshold, int(res.is_anomaly)]
        self.scores.append(point)
        self.latencies.append(res.latency_ms)
        self.published.append(_ms(rid))
        self.last = {"score": res.score, "threshold": res.threshold,
                     "anomalous": res.is_anomaly, "model": res.model_version,
                     "frame_id": res.frame_id, "rid": rid, "published": _ms(rid),
                     "class": res.product_class}
        if res.is_anomaly and res.mask is not None:
            self.masks[res.frame_id] = res.mask
            while len(self.masks) > MASKS_KEPT:
                self.masks.popitem(last=False)
        return point

    def tile(self, now: float, full: bool, new: list | None = None) -> dict:
        lat = sorted(self.latencies)
        recent = [t for t in self.published if t > now - 5.0]
        span = (now - recent[0]) if len(recent) > 1 else 0.0
        thumb_frame = self.thumb[0] if self.thumb else None
        out = {"line": self.line, "camera": self.name, **self.last,
               "fps": round((len(recent) - 1) / span, 1) if span > 0 else 0.0,
               "p50": lat[len(lat) // 2] if lat else None,
               "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
               "thumb": self.thumb_version if self.thumb else 0,
               "thumb_frame": thumb_frame,
               "overlay": thumb_frame is not None and thumb_frame in self.masks,
               "health": self.health}
        out["scores"] = list(self.scores) if full else (new or [])
        out["full"] = full
        return out


class Hub:
    """The console's reader: `run()` in the server's event loop; pages `subscribe()`."""

    def __init__(self, client, sync_client, lines: list[str], group: str,
                 status_every_s: float = 2.0) -> None:
        self.r, self.sync = client, sync_client
        self.lines = list(lines)
        self.group = group
        self.status_every_s = status_every_s
        # least recently seen first: a camera that reports moves to the end
        self.cameras: OrderedDict[tuple[str, str], Camera] = OrderedDict()
        self._evicted, self._evict_logged = 0, 0.0
        self.subscribers: set[asyncio.Queue] = set()
        self.status: dict[str, Any] = {"lines": [], "jobs": [], "trainers": []}
        self._cursor = {}
        self.seeded = False  # True once the readers start after the streams' current ends
        for line in self.lines:
            for key in (keys.results(line), keys.alerts(line), keys.health(line)):
                self._cursor[key] = "$"

    # ------------------------------------------------------------------ pages

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(QUEUE)
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self.subscribers.discard(q)

    def snapshot(self, max_bytes: int = SNAPSHOT_BYTES) -> dict:
        """Every tile, most recently seen first, within `max_bytes` of JSON (2,000 invented
        cameras must not make each new page download a megabyte): with their score history
        while half the budget lasts, then without it; tiles beyond the budget follow with
        their next result. `omitted`: how many were left out."""
        now, tiles, size = time.time(), [], 0
        for c in reversed(self.cameras.values()):
            tile = c.tile(now, full=True)
            if size >= max_bytes // 2:
                tile["scores"] = []  # the history starts afresh on the page
            size += len(json.dumps(tile))
            if size > max_bytes:
                break
            tiles.append(tile)
        return {"type": "snapshot", "now": now, "lines": self.lines, "tiles": tiles,
                "omitted": len(self.cameras) - len(tiles), "status": self.status}

    def broadcast(self, event: dict) -> None:
        event["now"] = time.time()
        payload = json.dumps(event)
        for q in list(self.subscribers):
            try:
                q.put_nowait(payload)
            except asyncio.QueueFull:  # a page that cannot keep up reconnects afresh
                self.subscribers.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(None)

    def camera(self, line: str, name: str) -> Camera | None:
        return self.cameras.get((line, name))

    # ------------------------------------------------------------------ readers

    async def run(self) -> None:
        await self._seed()
        tasks = [asyncio.create_task(self._guard(f)) for f in
                 (self._read_streams, self._poll_thumbs, self._poll_health, self._poll_status)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _guard(self, loop) -> None:
        """Keep a reader going through Redis outages and bad entries (logged, retried)."""
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("console_reader_failed", reader=loop.__name__,
                            error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def _seed(self) -> None:
        """Fill the sparklines from the newest results, and start reading after them."""
        for line in self.lines:
            try:
                entries = await self.r.xrevrange(keys.results(line), count=2000)
            except Exception as exc:
                log.warning("console_seed_failed", line=line, error=str(exc))
                continue
            if entries:
                self._cursor[keys.results(line)] = text(entries[0][0])
            for rid, fields in reversed(entries):
                self._add_result(line, text(rid), fields)
        # XREAD with "$" again after an empty block would miss what came in between: start
        # from each stream's last entry as it is now.
        for key, cursor in self._cursor.items():
            if cursor == "$":
                try:
                    last = await self.r.xrevrange(key, count=1)
                except Exception:
                    last = []
                self._cursor[key] = text(last[0][0]) if last else "0-0"
        self.seeded = True

    def _add_result(self, line: str, rid: str, fields) -> tuple[Camera, list] | None:
        try:
            res = Result.from_fields(fields)
        except Exception:  # a malformed entry from elsewhere: nothing to show for it
            return None
        cam = self.cameras.get((line, res.camera))
        if cam is None:
            if len(self.cameras) >= MAX_CAMERAS:  # a runaway producer inventing names
                self._evict()
            cam = self.cameras[(line, res.camera)] = Camera(line, res.camera)
        else:
            self.cameras.move_to_end((line, res.camera))
        return cam, cam.add(rid, res)

    def _evict(self) -> None:
        """Forget the least recently seen camera, so a real camera always gets its tile."""
        (line, name), cam = self.cameras.popitem(last=False)
        self._evicted += 1
        now = time.time()
        if now - self._evict_logged >= EVICT_LOG_S:
            log.warning("camera_evicted", line=line, camera=name, n=self._evicted,
                        limit=MAX_CAMERAS, last_seen_s=round(now - cam.last.get(
                            "published", now), 1))
            self._evict_logged, self._evicted = now, 0

    async def _read_streams(self) -> None:
        while True:
            got = await self.r.xread(self._cursor, count=1000, block=1000)
            for key, entries in got or []:
                key = text(key)
                self._cursor[key] = text(entries[-1][0])
                line = key.split("{", 1)[1].rsplit("}", 1)[0]
                if key == keys.results(line):
                    self._results(line, entries)
                elif key == keys.alerts(line):
                    for aid, fields in entries:
                        self._alert(line, text(aid), fields)
                else:
                    await self._refresh_health(line)

    def _results(self, line: str, entries) -> None:
        changed: dict[Camera, list] = {}
        for rid, fields in entries:
            added = self._add_result(line, text(rid), fields)
            if added is not None:
                changed.setdefault(added[0], []).append(added[1])
        now = time.time()
        if changed:
            self.broadcast({"type": "tiles", "tiles": [c.tile(now, False, new)
                                                   for c, new in changed.items()]})

    def _alert(self, line: str, aid: str, fields) -> None:
        event = alert_json(line, aid, fields)
        if event is not None:
            self.broadcast({"type": "alert", "alert": event})

    async def _poll_thumbs(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            cams = list(self.cameras.values())
            if not cams:
                continue
            async with self.r.pipeline(transaction=False) as pipe:
                for c in cams:
                    pipe.hget(keys.thumb(c.line, c.name), "frame_id")
                frames = await pipe.execute()
            fresh = [(c, text(f)) for c, f in zip(cams, frames, strict=True)
                     if f is not None and (c.thumb is None or c.thumb[0] != text(f))]
            if not fresh:
                continue
            async with self.r.pipeline(transaction=False) as pipe:
                for c, _ in fresh:
                    pipe.hmget(keys.thumb(c.line, c.name), "frame_id", "ts", "image")
                got = await pipe.execute()
            now, tiles = time.time(), []
            for (c, _), (fid, ts, image) in zip(fresh, got, strict=True):
                if fid is None or image is None:
                    continue
                try:
                    c.thumb = (text(fid), float(text(ts or b"0")), bytes(image))
                except ValueError:
                    continue
                c.thumb_version += 1
                tiles.append(c.tile(now, False))
            if tiles:
                self.broadcast({"type": "tiles", "tiles": tiles})

    async def _poll_health(self) -> None:
        while True:
            for line in self.lines:
                await self._refresh_health(line)
            await asyncio.sleep(2.0)

    async def _refresh_health(self, line: str) -> None:
        raw = await self.r.hgetall(keys.camera_health(line))
        state: dict[str, dict] = {}
        for cam, value in raw.items():
            try:
                kinds = json.loads(value)
                state[text(cam)] = {str(k): v.get("since") if isinstance(v, dict) else None
                                    for k, v in kinds.items()}
            except (ValueError, AttributeError):
                state[text(cam)] = {"unreadable": None}
        now, tiles = time.time(), []
        for (ln, name), c in self.cameras.items():
            if ln == line and c.health != state.get(name, {}):
                c.health = state.get(name, {})
                tiles.append(c.tile(now, False))
        if tiles:
            self.broadcast({"type": "tiles", "tiles": tiles})

    async def _poll_status(self) -> None:
        while True:
            self.status = await asyncio.to_thread(views.status, self.sync, self.lines,
                                                  self.group)
            self.broadcast({"type": "status", "status": self.status})
            await asyncio.sleep(self.status_every_s)

