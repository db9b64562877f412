"""Software triggers from Redis: the entries of `rlr:triggers:{line}` (written by the PLC
bridges and `rlrctl trigger`) in order, each with its part id, for a camera that exposes one
frame per trigger. Only triggers written after the feed opened count: an old one's part has
long gone by the camera."""

from __future__ import annotations

import collections
import time

import redis

from daemon import logs
from daemon.line.camera import PartTrigger
from daemon.wire import ids, keys

_BATCH = 64
_RETRY_S = 0.5  # between reads while Redis is away


class RedisTriggers:
    """Reads `keys.triggers(line)` from where it stood when opened; a trigger whose part id
    breaks the id grammar is logged and skipped (no frame could carry it)."""

    def __init__(self, client: redis.Redis, line: str) -> None:
        self.client, self.key = client, keys.triggers(line)
        last = client.xrevrange(self.key, count=1)
        self.last_id: bytes | str = last[0][0] if last else "0-0"
        self._waiting: collections.deque[PartTrigger] = collections.deque()
        self._away = False
        self._log = logs.get()

    def next(self, timeout_s: float) -> PartTrigger | None:
        """The next trigger, waiting up to `timeout_s` for one; None when none came."""
        if not self._waiting:
            self._read(max(1, int(timeout_s * 1000)))
        return self._waiting.popleft() if self._waiting else None

    def skip(self) -> int:
        """Drop every trigger waiting now (their parts went by while the camera was away)."""
        while self._read(None):
            pass
        skipped = len(self._waiting)
        self._waiting.clear()
        return skipped

    def _read(self, block_ms: int | None) -> int:
        try:
            reply = self.client.xread({self.key: self.last_id}, count=_BATCH, block=block_ms)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not self._away:  # once per outage, not once per poll
                self._log.warning("triggers_unavailable", error=str(exc))
            self._away = True
            time.sleep(_RETRY_S if block_ms else 0)
            return 0
        if self._away:
            self._log.info("triggers_back")
            self._away = False
        entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            self.last_id = entry_id
            trigger = self._parse(entry_id, fields)
            if trigger is not None:
                self._waiting.append(trigger)
        return len(entries)

    def _parse(self, entry_id: bytes, fields: dict[bytes, bytes]) -> PartTrigger | None:
        text = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
        try:
            part = ids.check("part", text.get("part_id", ""))
            ts = float(text.get("ts", "nan"))
        except ValueError as exc:
            self._log.warning("trigger_skipped", entry=entry_id.decode(), error=str(exc))
            return None
        return PartTrigger(part, ts, text.get("via", ""))
