"""Consumer groups, written once for every reader of a stream: the worker (asyncio client), the
alert bridges and the training-job queue (synchronous clients).

Each operation is a generator that yields the Redis commands it needs (`Cmd`) and receives
their replies, so its logic does not depend on the kind of client: `run_sync(client, op)`
drives it on a `redis.Redis`, `await run_async(client, op)` on a `redis.asyncio.Redis` (cluster
clients included). A command's exception is thrown back into the generator; that is how a lost
group (a Redis restart without persistence, a deleted stream) is recreated and the command
retried, in one place for every reader.

What a group reader needs:
- `ensure()`: create the group on every stream (MKSTREAM) at `start_id`, idempotently;
- `read(count, block_ms)`: new entries (`>`), delivered for the first time;
- `pending_own(count)`: entries this consumer name was given and never acknowledged (a
  restart under a fixed name finishes its own work first), with their delivery counts;
- `claim_stale(min_idle_ms, count)`: XAUTOCLAIM of entries other consumers left idle, with
  their delivery counts;
- `ack(items)`, `touch(items)` (reset the idle time of entries still being worked on),
  `pending_idle` + `claim` (look before taking over), `backlog(key)`.
Entries trimmed from a stream (MAXLEN) while pending come back apart, as `Claimed.trimmed`,
so their loss is recorded rather than silent.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import redis

from daemon.wire.text import text

T = TypeVar("T")


class Cmd(NamedTuple):
    """One Redis command, by its redis-py method name."""

    name: str
    args: tuple = ()
    kwargs: Mapping[str, Any] = {}


Op = Generator[Cmd, Any, T]


def run_sync(client: Any, op: Op[T]) -> T:
    """Run `op` on a synchronous client."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            cmd = op.send(reply) if error is None else op.throw(error)
        except StopIteration as done:
            return done.value
        try:
            reply, error = getattr(client, cmd.name)(*cmd.args, **cmd.kwargs), None
        except Exception as exc:
            reply, error = None, exc


async def run_async(client: Any, op: Op[T]) -> T:
    """Run `op` on an asyncio client."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            cmd = op.send(reply) if error is None else op.throw(error)
        except StopIteration as done:
            return done.value
        try:
            reply, error = await getattr(client, cmd.name)(*cmd.args, **cmd.kwargs), None
        except Exception as exc:
            reply, error = None, exc


def one(cmd: Cmd) -> Op[Any]:
    """An operation of a single command."""
    return (yield cmd)


class Delivery(NamedTuple):
    """A stream entry handed to this consumer. `stream`: the name its stream was registered
    under in the group (the worker's line, a bridge's `results:line1`, `jobs` for the training
    queue)."""

    stream: str
    entry_id: str  # e.g. "1700000000000-0"
    fields: Mapping[bytes, bytes]  # empty for an entry trimmed from the stream while pending
    deliveries: int  # how many times the group has handed it out, this one included

    @property
    def enqueued_ms(self) -> int:
        """When the entry entered the stream (milliseconds since the epoch), from its id."""
        return int(self.entry_id.split("-", 1)[0])


class Claimed(NamedTuple):
    deliveries: list[Delivery]  # entries to work on now
    trimmed: list[Delivery]  # pending, but gone from the stream (no fields): record the loss


def read_streams(command: str, head: tuple, streams: Mapping[str, str], block_ms: int | None,
                 cluster: bool, **kwargs: Any) -> Op[list]:
    """A multi-stream XREAD / XREADGROUP (`command`, with leading arguments `head`) that also
    works on a Redis Cluster: there streams of different lines live on different shards, so
    each is read on its own, a non-blocking pass first, then a short blocking read per stream.
    `block_ms=None` never blocks."""
    streams = dict(streams)
    if not cluster or len(streams) == 1:
        return (yield Cmd(command, (*head, streams), {"block": block_ms, **kwargs})) or []
    out: list = []
    for key, start in streams.items():
        out += (yield Cmd(command, (*head, {key: start}), {"block": None, **kwargs})) or []
    if out or not block_ms:
        return out
    per = max(1, block_ms // len(streams))
    for key, start in streams.items():
        out += (yield Cmd(command, (*head, {key: start}), {"block": per, **kwargs})) or []
        if out:
            break
    return out


def last_id(key: str) -> Op[str]:
    """The id of the stream's newest entry ("0-0" when empty). Reading from it instead of "$"
    misses nothing that arrives between two reads."""
    last = yield Cmd("xrevrange", (key,), {"count": 1})
    return text(last[0][0]) if last else "0-0"


def _lost_group(exc: redis.ResponseError) -> bool:
    # NOGROUP: the group is gone (Redis restarted without persistence, the key was deleted
    # and recreated); "no such key": the stream itself is gone (XINFO on a deleted stream).
    message = str(exc)
    return "NOGROUP" in message or "no such key" in message


class ConsumerGroup:
    """One consumer's view of a group over one or more streams (`streams`: key -> name)."""

    def __init__(self, group: str, consumer: str, streams: Mapping[str, str], *,
                 start_id: str = "0", cluster: bool = False) -> None:
        self.group, self.consumer = group, consumer
        self.streams = dict(streams)
        self.keys = {name: key for key, name in self.streams.items()}
        self.start_id, self.cluster = start_id, cluster

    # ------------------------------------------------------------------ the group itself

    def ensure(self) -> Op[list[str]]:
        """Create the group on every stream (and the stream if missing); the keys where it
        was created now (empty: it existed everywhere)."""
        created = []
        for key in self.streams:
            try:
                yield Cmd("xgroup_create", (key, self.group), {"id": self.start_id,
                                                               "mkstream": True})
                created.append(key)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        return created

    def with_group(self, make: Callable[[], Op[T]]) -> Op[T]:
        """Run `make()`; if the group (or stream) was lost, recreate it and run it again."""
        try:
            return (yield from make())
        except redis.ResponseError as exc:
            if not _lost_group(exc):
                raise
        yield from self.ensure()
        return (yield from make())

    # ------------------------------------------------------------------ reading

    def read(self, count: int, block_ms: int | None) -> Op[list[Delivery]]:
        """New entries for this consumer (blocks up to `block_ms` when there are none)."""
        reply = yield from self.with_group(lambda: read_streams(
            "xreadgroup", (self.group, self.consumer), dict.fromkeys(self.streams, ">"),
            block_ms, self.cluster, count=count))
        return [Delivery(self.streams[text(key)], text(eid), fields, 1)
                for key, entries in reply for eid, fields in entries if fields]

    def pending_own(self, count: int) -> Op[Claimed]:
        """Up to `count` entries per stream that this consumer name was given and never
        acknowledged, oldest first (reading them counts as a new delivery)."""
        reply = yield from self.with_group(lambda: read_streams(
            "xreadgroup", (self.group, self.consumer), dict.fromkeys(self.streams, "0"),
            None, self.cluster, count=count))
        out: list[Delivery] = []
        trimmed: list[Delivery] = []
        for key, entries in reply:
            key = text(key)
            live = [(text(eid), fields) for eid, fields in entries if fields]
            trimmed += [Delivery(self.streams[key], text(eid), {}, 0)
                        for eid, fields in entries if not fields]
            out += yield from self._counted(key, live)
        return Claimed(out, trimmed)

    def claim_stale(self, min_idle_ms: int, count: int) -> Op[Claimed]:
        """Take over entries other consumers left pending for at least `min_idle_ms`."""
        out: list[Delivery] = []
        trimmed: list[Delivery] = []
        for key, name in self.streams.items():
            reply = yield from self.with_group(lambda key=key: one(Cmd(
                "xautoclaim", (key, self.group, self.consumer, min_idle_ms, "0-0"),
                {"count": count})))
            entries = reply[1] if len(reply) > 1 else []
            deleted = reply[2] if len(reply) > 2 else []  # Redis 7: ids trimmed while pending
            trimmed += [Delivery(name, text(eid), {}, 0) for eid in deleted]
            out += yield from self._counted(key, [(text(e), f) for e, f in entries if f])
        return Claimed(out, trimmed)

    def pending_idle(self, key: str, min_idle_ms: int, count: int) -> Op[list[dict]]:
        """XPENDING summaries (any consumer) of entries idle for at least `min_idle_ms`."""
        return (yield from self.with_group(lambda: one(Cmd(
            "xpending_range", (key, self.group, "-", "+", count), {"idle": min_idle_ms}))))

    def claim(self, key: str, ids: Sequence[str], min_idle_ms: int) -> Op[list[Delivery]]:
        """Take over `ids` if they are still idle for `min_idle_ms` (someone else may have
        taken them meanwhile); the ones now ours."""
        if not ids:
            return []
        entries = yield Cmd("xclaim", (key, self.group, self.consumer, min_idle_ms, list(ids)))
        return (yield from self._counted(key, [(text(e), f) for e, f in entries if f]))

    def _counted(self, key: str, entries: list[tuple[str, Mapping]]) -> Op[list[Delivery]]:
        if not entries:
            return []
        pending = yield Cmd("xpending_range", (key, self.group, entries[0][0], entries[-1][0],
                                               len(entries) + 64),
                            {"consumername": self.consumer})
        counts = {text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [Delivery(self.streams[key], eid, fields, counts.get(eid, 2))
                for eid, fields in entries]

    # ------------------------------------------------------------------ settling

    def ack(self, items: Sequence[Delivery]) -> Op[int]:
        """Acknowledge entries; how many were still pending."""
        by_key: dict[str, list[str]] = {}
        for d in items:
            by_key.setdefault(self.keys[d.stream], []).append(d.entry_id)
        n = 0
        for key, ids in by_key.items():
            n += int((yield Cmd("xack", (key, self.group, *ids))))
        return n

    def touch(self, items: Sequence[Delivery]) -> Op[None]:
        """Reset the idle time of entries this consumer still works on, so no other consumer
        claims them while, say, a delivery is being retried."""
        by_key: dict[str, list[str]] = {}
        for d in items:
            by_key.setdefault(self.keys[d.stream], []).append(d.entry_id)
        for key, ids in by_key.items():
            yield Cmd("xclaim", (key, self.group, self.consumer, 0, ids), {"justid": True})

    def prune_consumers(self, key: str, min_idle_ms: int,
                        presence: Callable[[str], str] | None = None) -> Op[list[str]]:
        """Remove consumers (other than this one) idle for `min_idle_ms` with nothing
        pending, whose presence key (`presence(name)`, e.g. a heartbeat) is gone: workers
        that died stay listed in a group forever otherwise."""
        consumers = yield from self.with_group(lambda: one(Cmd("xinfo_consumers",
                                                               (key, self.group))))
        gone = []
        for c in consumers:
            name = text(c["name"])
            if name == self.consumer or int(c.get("pending") or 0) or \
                    int(c.get("idle") or 0) < min_idle_ms:
                continue
            if presence is not None and (yield Cmd("exists", (presence(name),))):
                continue  # alive, just idle (a quiet line)
            # DELCONSUMER drops the consumer's pending entries too: only consumers that had
            # none a moment ago and show no sign of life get here.
            yield Cmd("xgroup_delconsumer", (key, self.group, name))
            gone.append(name)
        return gone

    def backlog(self, key: str) -> Op[int]:
        """Entries of stream `key` the group has not acknowledged (undelivered + pending)."""
        groups = yield from self.with_group(lambda: one(Cmd("xinfo_groups", (key,))))
        for g in groups:
            if text(g["name"]) != self.group:
                continue
            lag = g.get("lag")
            if lag is None:
                # Redis 6 reports no lag, and Redis 7 none after deletions: 0 when the group
                # has read the newest entry, else the stream length (an upper bound; it only
                # lets a skip rule act on entries that are already too old).
                info = yield Cmd("xinfo_stream", (key,))
                same = text(info["last-generated-id"]) == text(g["last-delivered-id"])
                lag = 0 if same else int(info["length"])
            return int(lag) + int(g["pending"])
        return 0
