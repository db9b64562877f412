"""The worker's ports on Redis Streams (see `daemon.ports`).

Publishing a result is one Lua script per frame (all keys share the line's hash tag, so it is
Redis Cluster safe): claim the frame id (SET NX), XADD the result, push the verdict onto the
camera's alert window, XACK the frame. A replayed frame finds its id taken and is only acked:
results are idempotent by (camera, frame id) and an acked frame always has its result.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence

import redis
import redis.asyncio

from daemon import keys
from daemon.alerts import Verdict
from daemon.ports import Claimed, Delivery, Published
from daemon.redis_conn import aread_streams, is_cluster
from daemon.schema import Alert, DeadLetter, Result
from daemon.settings import Settings

_PUBLISH = """
local rid = redis.call('GET', KEYS[2])
if rid then
  redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
  return {0, rid, {}}
end
rid = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 8))
redis.call('SET', KEYS[2], rid, 'EX', ARGV[3])
redis.call('LPUSH', KEYS[4], ARGV[6] .. rid .. ARGV[7])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[5]) - 1)
redis.call('EXPIRE', KEYS[4], ARGV[3])
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
return {1, rid, redis.call('LRANGE', KEYS[4], 0, -1)}
"""

_ALERT = """
if tonumber(ARGV[1]) > 0 then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return false end
end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
"""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStreams:
    """FrameSource and ResultSink for one consumer of one group over several lines."""

    def __init__(self, client: redis.asyncio.Redis, settings: Settings, consumer: str) -> None:
        self.r = client
        self.s = settings
        self.group = settings.group
        self.consumer = consumer
        self.lines = list(settings.lines)
        self._by_key = {keys.frames(line): line for line in self.lines}
        self._publish = client.register_script(_PUBLISH)
        self._alert = client.register_script(_ALERT)
        self._own_recovered = False
        self.cluster = is_cluster(client)

    # ------------------------------------------------------------------ groups

    async def ensure_groups(self) -> None:
        """Create each line's consumer group at the start of its stream (idempotent).

        Starting at 0, not $: frames a camera pushed before the first worker came up are
        work too; the backlog rule skips them if they are stale by the time they are read.
        """
        for key in self._by_key:
            try:
                await self.r.xgroup_create(key, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _with_group(self, call):
        try:
            return await call()
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_groups()  # Redis lost the group (restart without persistence)
            return await call()

    # ------------------------------------------------------------------ FrameSource

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        streams = dict.fromkeys(self._by_key, ">")
        reply = await self._with_group(lambda: aread_streams(
            self.r, lambda st, block: self.r.xreadgroup(
                self.group, self.consumer, st, count=count, block=block), streams, block_ms))
        return [Delivery(self._by_key[_s(key)], _s(eid), fields, 1)
                for key, entries in reply or [] for eid, fields in entries if fields]

    async def claim_stale(self, min_idle_ms: int, count: int) -> Claimed:
        out, trimmed = [], []
        for key, line in self._by_key.items():
            if not self._own_recovered:
                out += await self._recover_own(key, line, count)
            reply = await self._with_group(lambda key=key: self.r.xautoclaim(
                key, self.group, self.consumer, min_idle_ms, "0-0", count=count))
            entries = reply[1] if len(reply) > 1 else []
            deleted = reply[2] if len(reply) > 2 else []
            trimmed += [(line, _s(eid)) for eid in deleted]
            live = [(_s(eid), fields) for eid, fields in entries if fields]
            out += await self._with_counts(key, line, live)
        self._own_recovered = True
        return Claimed(out, trimmed)

    async def _recover_own(self, key: str, line: str, count: int) -> list[Delivery]:
        """Entries a previous run under this consumer name read but never acked."""
        pending = await self._with_group(lambda: self.r.xpending_range(
            key, self.group, "-", "+", count, consumername=self.consumer))
        ids = [_s(p["message_id"]) for p in pending]
        if not ids:
            return []
        entries = await self.r.xclaim(key, self.group, self.consumer, 0, ids)
        return await self._with_counts(key, line, [(_s(e), f) for e, f in entries if f])

    async def _with_counts(self, key: str, line: str,
                           entries: list[tuple[str, Mapping]]) -> list[Delivery]:
        if not entries:
            return []
        pending = await self.r.xpending_range(
            key, self.group, entries[0][0], entries[-1][0], len(entries) + 64,
            consumername=self.consumer)
        counts = {_s(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [Delivery(line, eid, fields, counts.get(eid, 2)) for eid, fields in entries]

    async def backlog(self, line: str) -> int:
        key = keys.frames(line)
        groups = await self._with_group(lambda: self.r.xinfo_groups(key))
        for g in groups:
            if _s(g["name"]) == self.group:
                lag = g.get("lag")
                if lag is None:
                    lag = await self._lag_bound(key, g)
                return int(lag) + int(g["pending"])
        return 0

    async def _lag_bound(self, key: str, group: Mapping) -> int:
        """Redis 6 (the embedded server) reports no lag, and Redis 7 none after deletions:
        0 when the group has read the newest entry, else the stream length (an upper bound;
        it only lets the skip rule act on frames that are already too old)."""
        info = await self.r.xinfo_stream(key)
        if _s(info["last-generated-id"]) == _s(group["last-delivered-id"]):
            return 0
        return int(info["length"])

    async def ack(self, items: Sequence[Delivery]) -> int:
        pipe = self.r.pipeline(transaction=False)
        for d in items:
            pipe.xack(keys.frames(d.line), self.group, d.entry_id)
        return sum(int(n) for n in await pipe.execute())

    # ------------------------------------------------------------------ ResultSink

    async def publish(self, items: Sequence[tuple[Delivery, Result]],
                      window_n: int) -> list[Published]:
        # One round trip on a single server; on a cluster the scripts run concurrently, each
        # on its line's shard.
        pipe = self.r if self.cluster else self.r.pipeline(transaction=False)
        calls = []
        for d, res in items:
            flat: list = []
            for k, v in res.to_fields().items():
                flat += [k, v]
            head = json.dumps([res.frame_id, round(res.score, 6), int(res.is_anomaly)])[:-1]
            call = self._publish(
                keys=[keys.results(d.line), keys.seen(d.line, res.camera, res.frame_id),
                      keys.frames(d.line), keys.alert_window(d.line, res.camera)],
                args=[self.group, d.entry_id, self.s.dedup_ttl_s, self.s.results_maxlen,
                      window_n, head + ',"', f'",{res.capture_ts!r}]', *flat],
                client=pipe)
            if self.cluster:
                calls.append(call)
            else:
                await call
        replies = await (asyncio.gather(*calls) if self.cluster else pipe.execute())
        return [Published(bool(new), None if rid is None else _s(rid),
                          [Verdict.from_json(v) for v in window])
                for new, rid, window in replies]

    async def publish_shadow(self, items: Sequence[tuple[str, Result]]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for line, res in items:
            pipe.xadd(keys.shadow(line), res.to_fields(), maxlen=self.s.results_maxlen,
                      approximate=True)
        await pipe.execute()

    async def dead_letter(self, items: Sequence[tuple[Delivery | None, str, DeadLetter]]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for d, line, letter in items:
            pipe.xadd(keys.dlq(line), letter.to_fields(), maxlen=self.s.dlq_maxlen,
                      approximate=True)
            if d is not None:
                pipe.xack(keys.frames(line), self.group, d.entry_id)
            pipe.hincrby(keys.stats(line), "dead_lettered", 1)
            pipe.hincrby(keys.stats(line), f"dead_lettered:{letter.reason}", 1)
        await pipe.execute()

    async def count(self, line: str, field: str, n: int) -> None:
        await self.r.hincrby(keys.stats(line), field, n)

    async def raise_alert(self, alert: Alert, cooldown_s: float) -> str | None:
        flat: list = []
        for k, v in alert.to_fields().items():
            flat += [k, v]
        rid = await self._alert(
            keys=[keys.alert_cooldown(alert.line, alert.camera), keys.alerts(alert.line)],
            args=[int(cooldown_s * 1000), self.s.alerts_maxlen, *flat])
        return None if rid is None else _s(rid)

    async def heartbeat(self, worker_id: str, status: Mapping, ttl_s: float) -> None:
        await self.r.set(keys.worker(worker_id), json.dumps(dict(status)),
                         px=int(ttl_s * 1000))

    async def clear_heartbeat(self, worker_id: str) -> None:
        await self.r.delete(keys.worker(worker_id))

    async def close(self) -> None:
        await self.r.aclose()


def line_stats(client: redis.Redis, line: str) -> dict[str, int]:
    """The line's persistent counters (skipped, dead_lettered, ...), synchronously."""
    raw = client.hgetall(keys.stats(line))
    return {_s(k): int(v) for k, v in raw.items()}


def now_ms() -> int:
    return int(time.time() * 1000)
