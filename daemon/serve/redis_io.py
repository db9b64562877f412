"""The worker's ports on Redis Streams (see `daemon.serve.ports`).

Reading goes through the line's consumer group (`daemon.wire.groups`). Publishing a result is
one Lua script per frame (all keys share the line's hash tag, so it is Redis Cluster safe):
claim the frame id (SET NX), XADD the result, push the verdict onto the camera's alert window,
XACK the frame. A replayed frame finds its id taken and is only acked: results are idempotent
by (camera, frame id) and an acked frame always has its result. Every Redis call goes through
`_call`, which turns "Redis is away" into the port's own `SourceUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import redis.asyncio

from daemon.errors import SourceUnavailable
from daemon.serve.ports import Published
from daemon.serve.rules.parts import Joined, JoinRequest
from daemon.serve.rules.window import RecentFrame
from daemon.serve.settings import WorkerSettings
from daemon.wire import ids, keys
from daemon.wire.clients import away, is_cluster
from daemon.wire.groups import Claimed, ConsumerGroup, Delivery, Op, run_async
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Alert, DeadLetter, HealthEvent, Result
from daemon.wire.text import text

T = TypeVar("T")

# One call per line and batch. KEYS: the results stream, the frames stream, the line's
# parts-due set, then per frame its seen key, its camera's alert-window key, its part's state
# and done keys (unused when the frame has no part). ARGV: group, dedup ttl, results cap,
# window length, part state ttl, then per frame: entry id, window entry head and tail, 1 when
# anomalous (its window is returned), 1 when it has a part (then the part's join request:
# part, view, capture ms, deadline ms, views expected, station JSON, view JSON), the number of
# result fields, the fields. Returns per frame {new, result id, window, first entry, join
# code, part state when complete, the decided part's verdict id when late}. The LPUSH + LTRIM
# is the window's step as daemon/serve/rules/window.py defines it (`push`), `join` the part
# rule's step (daemon/serve/rules/parts.py `join`); the memory port calls those.
_PUBLISH = """
local function join(open, done, due, p, rid, pttl)
  local marker = redis.call('GET', done)
  if marker then
    local id, dl = string.match(marker, '^(%S+) %S+ (%S+)$')
    if id and tonumber(p[3]) < tonumber(dl) then return 'late', {}, id end
  end
  if redis.call('EXISTS', open) == 0 then
    redis.call('HSET', open, '_first', p[3], '_deadline', p[4], '_expect', p[5], '_n', '0',
               '_meta', p[6])
    redis.call('ZADD', due, p[4], p[1])
  end
  redis.call('EXPIRE', open, pttl)
  if redis.call('HEXISTS', open, 'v:' .. p[2]) == 1 then return 'duplicate', {}, '' end
  redis.call('HSET', open, 'v:' .. p[2], p[7], 'r:' .. p[2], rid)
  local n = redis.call('HINCRBY', open, '_n', 1)
  if n >= tonumber(redis.call('HGET', open, '_expect')) then
    return 'complete', redis.call('HGETALL', open), ''
  end
  return 'open', {}, ''
end

local group, ttl, cap, wlen, pttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]) - 1, ARGV[5]
local out, a = {}, 6
for i = 4, #KEYS, 4 do
  local entry, head, tail, anomalous = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local part = nil
  if ARGV[a + 4] == '1' then
    part = {ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 10],
            ARGV[a + 11]}
    a = a + 12
  else
    a = a + 5
  end
  local n = tonumber(ARGV[a])
  local fields = {}
  for j = 1, n do fields[j] = ARGV[a + j] end
  a = a + 1 + n
  local seen = redis.call('GET', KEYS[i])
  if seen then
    redis.call('XACK', KEYS[2], group, entry)
    local sp = string.find(seen, ' ', 1, true)
    if sp then
      out[#out + 1] = {0, string.sub(seen, 1, sp - 1), {}, string.sub(seen, sp + 1), '', {}, ''}
    else
      out[#out + 1] = {0, seen, {}, '', '', {}, ''}
    end
  else
    local rid = redis.call('XADD', KEYS[1], 'MAXLEN', '~', cap, '*', unpack(fields))
    redis.call('SET', KEYS[i], rid .. ' ' .. entry, 'EX', ttl)
    redis.call('LPUSH', KEYS[i + 1], head .. rid .. tail)
    redis.call('LTRIM', KEYS[i + 1], 0, wlen)
    redis.call('EXPIRE', KEYS[i + 1], ttl)
    redis.call('XACK', KEYS[2], group, entry)
    local window = {}
    if anomalous == '1' then window = redis.call('LRANGE', KEYS[i + 1], 0, -1) end
    local code, state, late = '', {}, ''
    if part then code, state, late = join(KEYS[i + 2], KEYS[i + 3], KEYS[3], part, rid, pttl) end
    out[#out + 1] = {1, rid, window, '', code, state, late}
  end
end
return out
"""

# A part's verdict, unless the part is closed already or is not the instance decided (its
# first capture differs): KEYS the parts stream, the part's state, the parts-due set, its
# done key; ARGV part id, first capture ms, done ttl, stream cap, the entry's fields.
_EMIT_PART = """
local first = redis.call('HGET', KEYS[2], '_first')
if not first or first ~= ARGV[2] then return false end
local deadline = redis.call('HGET', KEYS[2], '_deadline')
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
redis.call('SET', KEYS[4], id .. ' ' .. first .. ' ' .. deadline, 'EX', ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return id
"""

# The alert with its cooldown claimed in the same step (set-if-absent with an expiry): one
# alert per camera and cooldown, whichever worker's comes first.
_ALERT = """
if tonumber(ARGV[1]) > 0 then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return false end
end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
"""



# KEYS[1] the line's camera-health hash, KEYS[2] its health stream, KEYS[3] the list of the
# camera's entry ids in that stream (`_camera_events`). ARGV: camera, kind, state, the state
# entry (JSON), stream cap, the camera's cap, then the event's fields. Returns 1 when announced.
# Beyond its own cap a camera's oldest event is deleted, so a camera that keeps raising and
# clearing trims its own history, not the other cameras'.
_HEALTH = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local state = {}
if cur then state = cjson.decode(cur) end
if ARGV[3] == 'raised' then
  if state[ARGV[2]] then return 0 end
  state[ARGV[2]] = cjson.decode(ARGV[4])
else
  if not state[ARGV[2]] then return 0 end
  state[ARGV[2]] = nil
end
if next(state) == nil then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(state))
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 7))
redis.call('RPUSH', KEYS[3], id)
while redis.call('LLEN', KEYS[3]) > tonumber(ARGV[6]) do
  redis.call('XDEL', KEYS[2], redis.call('LPOP', KEYS[3]))
end
return 1
"""


def _camera_events(line: str, camera: str) -> str:
    """List: the ids of `camera`'s entries in the line's health stream, oldest first (the same
    hash tag as the stream: one script may touch both on a Redis Cluster)."""
    return f"{keys.PREFIX}:healthids:{{{line}}}:{ids.key_part(camera)}"


class RedisStreams:
    """FrameSource and ResultSink for one consumer of one group over several lines."""

    def __init__(self, client: redis.asyncio.Redis, settings: WorkerSettings,
                 consumer: str) -> None:
        self.r = client
        self.s = settings
        self.consumer = consumer
        self.lines = list(settings.lines)
        self.cluster = is_cluster(client)
        # Starting at 0, not $: frames a camera pushed before the first worker came up are
        # work too; the backlog rule skips them if they are stale by the time they are read.
        self.group = ConsumerGroup(settings.group, consumer,
                                   {keys.frames(line): line for line in self.lines},
                                   start_id="0", cluster=self.cluster)
        self._publish = client.register_script(_PUBLISH)
        self._emit_part = client.register_script(_EMIT_PART)
        self._alert = client.register_script(_ALERT)
        self._health = client.register_script(_HEALTH)
        self._own_recovered = False

    async def _call(self, make: Callable[[], Awaitable[T]], what: str) -> T:
        try:
            return await make()
        except Exception as exc:
            if not away(exc):
                raise
            raise SourceUnavailable(f"Redis unavailable during {what}: "
                                    f"{type(exc).__name__}: {exc}") from exc

    async def _op(self, op: Op[T], what: str) -> T:
        return await self._call(lambda: run_async(self.r, op), what)

    # ------------------------------------------------------------------ FrameSource

    async def ensure_groups(self) -> None:
        await self._op(self.group.ensure(), "ensure_groups")

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        return await self._op(self.group.read(count, block_ms), "read")

    async def claim_stale(self, min_idle_ms: int, count: int) -> Claimed:
        out = Claimed([], [])
        if not self._own_recovered:
            # What a previous run under this consumer name read but never acked.
            out = await self._op(self.group.pending_own(count), "recover_own")
            self._own_recovered = True
        stale = await self._op(self.group.claim_stale(min_idle_ms, count), "claim_stale")
        return Claimed(out.deliveries + stale.deliveries, out.trimmed + stale.trimmed)

    async def touch(self, held: Sequence[tuple[str, str]]) -> None:
        # XCLAIM JUSTID to this consumer, one stream per command (Redis Cluster safe).
        await self._op(self.group.touch([Delivery(line, eid, {}, 0) for line, eid in held]),
                       "touch")

    async def prune_consumers(self, min_idle_ms: int) -> list[str]:
        gone: list[str] = []
        for line in self.lines:
            gone += await self._op(self.group.prune_consumers(
                keys.frames(line), min_idle_ms, presence=keys.worker), "prune_consumers")
        return gone

    async def backlog(self, line: str) -> int:
        return await self._op(self.group.backlog(keys.frames(line)), "backlog")

    async def ack(self, items: Sequence[Delivery]) -> int:
        return await self._op(self.group.ack(items), "ack")

    # ------------------------------------------------------------------ ResultSink

    async def publish(self, items: Sequence[tuple[Delivery, Result]], window_n: int,
                      joins: Sequence[JoinRequest | None] = ()) -> list[Published]:
        joins = list(joins) or [None] * len(items)
        return await self._call(lambda: self._publish_all(items, window_n, joins), "publish")

    async def _publish_all(self, items: Sequence[tuple[Delivery, Result]], window_n: int,
                           joins: list[JoinRequest | None]) -> list[Published]:
        by_line: dict[str, list[int]] = {}
        for i, (d, _) in enumerate(items):
            by_line.setdefault(d.stream, []).append(i)
        # One script call per line (its keys share the line's hash tag): one round trip on a
        # single server; on a cluster the calls run concurrently, each on its line's shard.
        if self.cluster:
            replies = await asyncio.gather(*(
                self._publish_line(self.r, line, [items[i] for i in idx], window_n,
                                   [joins[i] for i in idx])
                for line, idx in by_line.items()))
        else:
            async with self.r.pipeline(transaction=False) as pipe:
                for line, idx in by_line.items():
                    await self._publish_line(pipe, line, [items[i] for i in idx], window_n,
                                             [joins[i] for i in idx])
                replies = await pipe.execute()
        out: list[Published | None] = [None] * len(items)
        for idx, reply in zip(by_line.values(), replies, strict=True):
            for i, r in zip(idx, reply, strict=True):
                out[i] = Published(bool(r[0]), None if r[1] is None else text(r[1]),
                                   [RecentFrame.from_json(v) for v in r[2]],
                                   text(r[3]) or None, _joined(r[4:]))
        return out

    def _publish_line(self, client, line: str, items: Sequence[tuple[Delivery, Result]],
                      window_n: int, joins: Sequence[JoinRequest | None]):
        """The script call that publishes `items` (all of `line`) on `client`."""
        keys_: list[str] = [keys.results(line), keys.frames(line), keys.parts_due(line)]
        args: list = [self.group.group, self.s.dedup_ttl_s, self.s.results_maxlen, window_n,
                      self.s.part_done_ttl_s]
        for (d, res), req in zip(items, joins, strict=True):
            part = req.part if req is not None else ""
            keys_ += [keys.seen(line, res.camera, res.frame_id),
                      keys.alert_window(line, res.camera), keys.part_open(line, part),
                      keys.part_done(line, part)]
            flat = res.to_flat()
            head, tail = RecentFrame.of(res, "").around_result_id()
            args += [d.entry_id, head, tail, int(res.is_anomaly)]
            args += [0] if req is None else [1, *req]
            args += [len(flat), *flat]
        return self._publish(keys=keys_, args=args, client=client)

    async def emit_part(self, verdict: PartVerdict, first_ms: int,
                        done_ttl_s: int) -> str | None:
        flat: list = []
        for k, v in verdict.to_fields().items():
            flat += [k, v]
        line, part = verdict.line, verdict.part_id
        rid = await self._call(lambda: self._emit_part(
            keys=[keys.parts(line), keys.part_open(line, part), keys.parts_due(line),
                  keys.part_done(line, part)],
            args=[part, str(first_ms), done_ttl_s, self.s.parts_maxlen, *flat]), "emit_part")
        return None if rid is None else text(rid)

    async def due_parts(self, line: str, now_ms: int, count: int) -> list[tuple[str, dict]]:
        due = await self._call(lambda: self.r.zrangebyscore(
            keys.parts_due(line), "-inf", now_ms, start=0, num=count), "due_parts")
        if not due:
            return []
        parts = [text(p) for p in due]

        async def states() -> list:
            async with self.r.pipeline(transaction=False) as pipe:
                for part in parts:
                    pipe.hgetall(keys.part_open(line, part))
                return await pipe.execute()

        out, gone = [], []
        for part, state in zip(parts, await self._call(states, "due_parts"), strict=True):
            (out.append((part, state)) if state else gone.append(part))
        if gone:  # decided meanwhile, or expired: nothing left to decide
            await self._call(lambda: self.r.zrem(keys.parts_due(line), *gone), "due_parts")
        return out

    async def active_recipes(self, lines: Sequence[str]) -> dict[str, dict]:
        async def go() -> list:
            async with self.r.pipeline(transaction=False) as pipe:
                for line in lines:
                    pipe.hgetall(keys.recipe_active(line))
                return await pipe.execute()

        return dict(zip(lines, await self._call(go, "active_recipes"), strict=True))

    async def publish_shadow(self, items: Sequence[tuple[str, Result]]) -> None:
        async def go() -> None:
            async with self.r.pipeline(transaction=False) as pipe:
                for line, res in items:
                    pipe.xadd(keys.shadow(line), res.to_fields(), maxlen=self.s.results_maxlen,
                              approximate=True)
                await pipe.execute()

        await self._call(go, "publish_shadow")

    async def dead_letter(self, items: Sequence[tuple[Delivery | None, str, DeadLetter]]) -> None:
        async def go() -> None:
            async with self.r.pipeline(transaction=False) as pipe:
                for d, line, letter in items:
                    pipe.xadd(keys.dlq(line), letter.to_fields(), maxlen=self.s.dlq_maxlen,
                              approximate=True)
                    if d is not None:
                        pipe.xack(keys.frames(line), self.group.group, d.entry_id)
                    pipe.hincrby(keys.stats(line), "dead_lettered", 1)
                    pipe.hincrby(keys.stats(line), f"dead_lettered:{letter.reason}", 1)
                await pipe.execute()

        await self._call(go, "dead_letter")

    async def count(self, line: str, field: str, n: int) -> None:
        await self._call(lambda: self.r.hincrby(keys.stats(line), field, n), "count")

    async def publish_health(self, events: Sequence[HealthEvent]) -> list[bool]:
        out = []
        for e in events:
            flat: list = []
            for k, v in e.to_fields().items():
                flat += [k, v]
            entry = json.dumps({"since": e.since, "evidence": e.evidence, "worker": e.worker})
            new = await self._call(lambda e=e, entry=entry, flat=flat: self._health(
                keys=[keys.camera_health(e.line), keys.health(e.line),
                      _camera_events(e.line, e.camera)],
                args=[e.camera, e.kind, e.state, entry, self.s.health_maxlen,
                      self.s.health_camera_maxlen, *flat]),
                "publish_health")
            out.append(bool(new))
        return out

    async def camera_health(self, line: str, camera: str) -> tuple[str, ...]:
        raw = await self._call(lambda: self.r.hget(keys.camera_health(line), camera),
                               "camera_health")
        try:
            return tuple(sorted(json.loads(raw))) if raw else ()
        except (ValueError, TypeError):
            return ("unknown",)  # unreadable state: say so rather than "healthy"

    async def thumbnails(self, items: Sequence[tuple[str, str, str, float, bytes]],
                         ttl_s: float) -> None:
        async def go() -> None:
            async with self.r.pipeline(transaction=False) as pipe:
                for line, camera, frame_id, ts, data in items:
                    key = keys.thumb(line, camera)
                    pipe.hset(key, mapping={"frame_id": frame_id, "ts": repr(ts), "image": data})
                    pipe.pexpire(key, int(ttl_s * 1000))
                await pipe.execute()

        await self._call(go, "thumbnails")

    async def raise_alert(self, alert: Alert, cooldown_s: float) -> str | None:
        flat: list = []
        for k, v in alert.to_fields().items():
            flat += [k, v]
        rid = await self._call(lambda: self._alert(
            keys=[keys.alert_cooldown(alert.line, alert.camera), keys.alerts(alert.line)],
            args=[int(cooldown_s * 1000), self.s.alerts_maxlen, *flat]), "raise_alert")
        return None if rid is None else text(rid)

    async def heartbeat(self, worker_id: str, status: Mapping, ttl_s: float) -> None:
        await self._call(lambda: self.r.set(keys.worker(worker_id), json.dumps(dict(status)),
                                            px=int(ttl_s * 1000)), "heartbeat")

    async def clear_heartbeat(self, worker_id: str) -> None:
        await self._call(lambda: self.r.delete(keys.worker(worker_id)), "clear_heartbeat")

    async def close(self) -> None:
        await self.r.aclose()


def _joined(reply: list) -> Joined | None:
    """The join part of a publish reply: code, flat state, late verdict id."""
    code = text(reply[0]) if reply else ""
    if not code:
        return None
    flat = reply[1]
    state = {text(flat[j]): text(flat[j + 1]) for j in range(0, len(flat), 2)}
    return Joined(code, state or None, text(reply[2]) or None)
