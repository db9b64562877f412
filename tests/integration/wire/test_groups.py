"""The one consumer-group helper, on a real Redis, driven both ways: a synchronous client (as
the bridges and the job queue use it) and an asyncio client (as the worker does)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
import redis.asyncio

from daemon.wire.groups import ConsumerGroup, last_id, read_streams, run_async, run_sync


@pytest.fixture
def streams(rclient):
    """Two fresh stream keys (line names a and b); deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    keys = {f"test:groups:{{{tag}}}:a": "a", f"test:groups:{{{tag}}}:b": "b"}
    yield keys
    rclient.delete(*keys)


def _add(client, key: str, n: int) -> list[str]:
    return [client.xadd(key, {"i": str(i)}).decode() for i in range(n)]


def test_ensure_creates_the_group_once_and_reads_from_the_start(rclient, streams):
    key_a = next(iter(streams))
    before = _add(rclient, key_a, 2)  # frames a camera pushed before any reader came up
    g = ConsumerGroup("g", "c1", streams)
    assert sorted(run_sync(rclient, g.ensure())) == sorted(streams)
    assert run_sync(rclient, g.ensure()) == []  # idempotent: BUSYGROUP is not an error
    got = run_sync(rclient, g.read(10, None))
    assert [(d.stream, d.entry_id, d.deliveries) for d in got] == [("a", i, 1) for i in before]
    assert run_sync(rclient, g.backlog(key_a)) == 2  # read but not acknowledged
    assert run_sync(rclient, g.ack(got)) == 2
    assert run_sync(rclient, g.backlog(key_a)) == 0


def test_a_lost_group_is_recreated_and_the_read_retried(rclient, streams):
    key_a = next(iter(streams))
    g = ConsumerGroup("g", "c1", streams)
    run_sync(rclient, g.ensure())
    rclient.delete(*streams)  # a FLUSHALL, or a Redis restart without persistence
    assert run_sync(rclient, g.read(10, None)) == []
    assert run_sync(rclient, g.backlog(key_a)) == 0  # XINFO on a missing stream, too
    ids = _add(rclient, key_a, 1)
    assert [d.entry_id for d in run_sync(rclient, g.read(10, None))] == ids


def test_own_pending_entries_come_back_with_their_delivery_counts(rclient, streams):
    key_a = next(iter(streams))
    g = ConsumerGroup("g", "c1", streams)
    run_sync(rclient, g.ensure())
    ids = _add(rclient, key_a, 3)
    run_sync(rclient, g.read(10, None))  # read, then "crash" without acking
    again = ConsumerGroup("g", "c1", streams)  # the same consumer name, restarted
    own = run_sync(rclient, again.pending_own(10))
    assert [(d.entry_id, d.deliveries) for d in own.deliveries] == [(i, 2) for i in ids]
    assert own.trimmed == []


def test_claim_stale_takes_over_a_dead_consumers_entries_and_reports_trimmed_ones(
        rclient, streams):
    key_a = next(iter(streams))
    dead = ConsumerGroup("g", "dead", streams)
    run_sync(rclient, dead.ensure())
    ids = _add(rclient, key_a, 3)
    run_sync(rclient, dead.read(10, None))
    rclient.xdel(key_a, ids[0])  # trimmed by MAXLEN while pending
    alive = ConsumerGroup("g", "alive", streams)
    claimed = run_sync(rclient, alive.claim_stale(0, 10))
    assert [(d.entry_id, d.deliveries) for d in claimed.deliveries] == [(i, 2) for i in ids[1:]]
    assert [(d.stream, d.entry_id, d.fields) for d in claimed.trimmed] == [("a", ids[0], {})]
    pending = rclient.xpending_range(key_a, "g", "-", "+", 10)
    assert {p["consumer"].decode() for p in pending} == {"alive"}


def test_pending_idle_and_claim_look_before_they_take(rclient, streams):
    key_a = next(iter(streams))
    g = ConsumerGroup("g", "owner", streams)
    run_sync(rclient, g.ensure())
    ids = _add(rclient, key_a, 1)
    run_sync(rclient, g.read(1, None))
    other = ConsumerGroup("g", "other", streams)
    assert run_sync(rclient, other.pending_idle(key_a, 60_000, 10)) == []  # not idle yet
    [p] = run_sync(rclient, other.pending_idle(key_a, 0, 10))
    run_sync(rclient, g.touch(run_sync(rclient, g.pending_own(1)).deliveries))
    assert run_sync(rclient, other.claim(key_a, [p["message_id"].decode()], 60_000)) == []
    [took] = run_sync(rclient, other.claim(key_a, ids, 0))
    assert took.entry_id == ids[0] and took.fields == {b"i": b"0"}


def test_the_same_operations_run_on_an_asyncio_client(redis_url, rclient, streams):
    _, key_b = list(streams)
    _add(rclient, key_b, 2)

    async def go():
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            g = ConsumerGroup("g", "c1", streams)
            await run_async(client, g.ensure())
            got = await run_async(client, g.read(10, 100))
            n = await run_async(client, g.ack(got))
            return [d.stream for d in got], n, await run_async(client, g.backlog(key_b))
        finally:
            await client.aclose()

    assert asyncio.run(go()) == (["b", "b"], 2, 0)


def test_plain_reads_from_a_pinned_last_id_miss_nothing(rclient, streams):
    key_a = next(iter(streams))
    assert run_sync(rclient, last_id(key_a)) == "0-0"
    first = _add(rclient, key_a, 1)
    pinned = run_sync(rclient, last_id(key_a))
    assert pinned == first[0]
    later = _add(rclient, key_a, 2)
    reply = run_sync(rclient, read_streams("xread", (), {key_a: pinned}, None, False))
    assert [eid.decode() for _, entries in reply for eid, _ in entries] == later


def test_errors_other_than_a_lost_group_reach_the_caller(rclient, streams):
    key_a = next(iter(streams))
    rclient.delete(key_a)
    rclient.set(key_a, "not a stream")
    try:
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            run_sync(rclient, ConsumerGroup("g", "c1", {key_a: "a"}).ensure())
    finally:
        rclient.delete(key_a)
