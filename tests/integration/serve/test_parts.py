"""Exactly one verdict per part, on a real Redis (the publish script's join, the emit script)
and on the memory port, for the same sequences: views joined, a view delivered twice, a
duplicate view, a late view, a part id used again after a wrap-around, a worker killed between
views or between its last view and the verdict, two workers sweeping at once."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio

from daemon.cli.settings import load_settings
from daemon.serve.memory_io import MemoryStreams
from daemon.serve.redis_io import RedisStreams
from daemon.serve.rules.parts import JoinRequest, Station, decide
from daemon.wire import keys
from daemon.wire.groups import Delivery
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Result

STATION = Station(("top", "side"), 800, "reject", "bracket@1", "BRK", "bracket")


def _res(part: str, view: str, ts: float, anomalous: bool = False, fid: str = "") -> Result:
    return Result(fid or f"{part}-{view}-{ts}", "cam1", 0.9 if anomalous else 0.1, anomalous,
                  0.5, "m-1", ts, 1.0, 2.0, 3.0, "w", "bracket", None, part, view)


class Station1:
    """One worker's publish + rule steps, on a port."""

    def __init__(self, port, line: str, name: str) -> None:
        self.port, self.line, self.name, self.n = port, line, name, 0

    async def view(self, res: Result, entry: str | None = None, emit: bool = True):
        self.n += 1
        d = Delivery(self.line, entry or f"{int(res.capture_ts * 1000)}-{self.n}", {}, 1)
        [pub] = await self.port.publish([(d, res)], 1, [JoinRequest.of(res, res.view,
                                                                       STATION)])
        if emit and pub.joined is not None and pub.joined.code == "complete":
            await self.emit(decide(self.line, res.part, pub.joined.state, time.time(),
                                   self.name))
        return pub

    async def emit(self, verdict: PartVerdict) -> str | None:
        return await self.port.emit_part(verdict, round(verdict.first_ts * 1000), 3600)

    async def sweep(self, now: float) -> list[str | None]:
        out = []
        for part, state in await self.port.due_parts(self.line, int(now * 1000), 100):
            out.append(await self.emit(decide(self.line, part, state, now, self.name)))
        return out


async def _redis_port(url: str, line: str, name: str) -> RedisStreams:
    s = load_settings(lines=line, consumer=name, metrics_port=0)
    port = RedisStreams(redis.asyncio.Redis.from_url(url), s, name)
    await port.ensure_groups()
    return port


async def _verdicts(port, line: str) -> list[tuple]:
    if isinstance(port, MemoryStreams):
        entries = [v for _, v in port.parts[line]]
    else:
        raw = await port.r.xrange(keys.parts(line))
        entries = [PartVerdict.from_fields(f) for _, f in raw]
    return [(v.part_id, v.verdict, v.outcome, tuple(sorted(v.views)), v.missing,
             round(v.first_ts, 3)) for v in entries]


async def _scenario(a: Station1, b: Station1) -> list:
    """Every case; `a` and `b` are two workers of the line."""
    t0 = time.time() - 100  # captures well in the past: deadlines are measured from them
    codes = []
    # 1. two views, two workers (a killed after the first view: b carries on)
    codes.append((await a.view(_res("P1", "top", t0))).joined.code)
    codes.append((await b.view(_res("P1", "side", t0 + 0.1))).joined.code)
    # 2. a view delivered twice (same entry: a redelivery) and a duplicate view
    first = _res("P2", "top", t0 + 1, fid="P2-top")
    await a.view(first, entry="900-1")
    again = await b.view(first, entry="900-1")
    codes.append(("redelivered", again.new, again.joined))
    codes.append((await a.view(_res("P2", "top", t0 + 1.1, fid="P2-top-b"))).joined.code)
    codes.append((await a.view(_res("P2", "side", t0 + 1.2, True))).joined.code)
    # 3. a late view: P2 decided, its deadline t0 + 1.8; a side view captured before that
    late = await b.view(_res("P2", "side", t0 + 1.5, fid="P2-side-late"))
    codes.append((late.joined.code, late.joined.done is not None))
    # 4. the id used again after a wrap-around: captured after P2's deadline, a new part
    codes.append((await a.view(_res("P2", "top", t0 + 50))).joined.code)
    codes.append((await b.view(_res("P2", "side", t0 + 50.2))).joined.code)
    # 5. a part that never gets its side view: incomplete at the sweep, once for two workers
    await a.view(_res("P3", "top", t0 + 60))
    # 6. a worker killed after the last view joined, before it emitted: complete, not emitted
    await a.view(_res("P4", "top", t0 + 61))
    gone = await a.view(_res("P4", "side", t0 + 61.1, True), emit=False)
    codes.append(gone.joined.code)
    swept = await asyncio.gather(a.sweep(time.time()), b.sweep(time.time()))
    codes.append(sum(x is not None for x in swept[0] + swept[1]))  # P3 and P4, once each
    codes.append(await a.sweep(time.time()))  # nothing left
    return codes


@pytest.mark.parametrize("on", ["redis", "memory"])
def test_each_part_gets_exactly_one_verdict(redis_url, line, on):
    async def go():
        if on == "redis":
            pa, pb = await _redis_port(redis_url, line, "w1"), await _redis_port(redis_url,
                                                                                  line, "w2")
        else:
            pa = pb = MemoryStreams([line])
        try:
            codes = await _scenario(Station1(pa, line, "w1"), Station1(pb, line, "w2"))
            return codes, await _verdicts(pa, line)
        finally:
            if on == "redis":
                await pa.close()
                await pb.close()

    codes, verdicts = asyncio.run(go())
    assert codes == ["open", "complete", ("redelivered", False, None), "duplicate", "complete",
                     ("late", True), "open", "complete", "complete", 2, []]
    t0 = verdicts[0][5]
    rel = [(p, v, o, views, m, round(ts - t0, 1)) for p, v, o, views, m, ts in verdicts]
    assert sorted(rel, key=lambda r: (r[0], r[5])) == [
        ("P1", "pass", "pass", ("side", "top"), (), 0.0),
        ("P2", "reject", "reject", ("side", "top"), (), 1.0),
        ("P2", "pass", "pass", ("side", "top"), (), 50.0),
        ("P3", "incomplete", "reject", ("top",), ("side",), 60.0),
        ("P4", "reject", "reject", ("side", "top"), (), 61.0)]


def test_a_decided_part_leaves_no_state_but_its_done_marker(redis_url, line, rclient):
    async def go():
        port = await _redis_port(redis_url, line, "w1")
        try:
            st = Station1(port, line, "w1")
            t0 = time.time() - 10
            await st.view(_res("Q1", "top", t0))
            await st.view(_res("Q1", "side", t0 + 0.1))
        finally:
            await port.close()

    asyncio.run(go())
    assert not rclient.exists(keys.part_open(line, "Q1"))
    assert rclient.zcard(keys.parts_due(line)) == 0
    _entry, first, deadline = rclient.get(keys.part_done(line, "Q1")).decode().split(" ")
    assert int(deadline) - int(first) == STATION.deadline_ms
    assert 0 < rclient.ttl(keys.part_done(line, "Q1")) <= 3600


@pytest.mark.slow
def test_sigkill_between_views_still_gives_each_part_one_verdict(redis_url, line, rclient,
                                                                  served_model, frame_jpegs,
                                                                  tmp_path):
    """Two real workers, 150 parts of two views; one worker SIGKILLed mid-run with views in
    flight. Every part gets exactly one verdict, every view in it."""
    import signal

    from daemon.wire.schema import encode_frame
    from tests.integration.procs import start_worker, wait_for, wait_ready

    opts = {"batch_size": 8, "part_views": "top,side", "part_deadline_ms": 60_000,
            "claim_idle_ms": 1500, "backlog_limit": 5000, "frames_maxlen": 20000}
    a = start_worker(redis_url, line, served_model, "w-pa", tmp_path, **opts)
    b = start_worker(redis_url, line, served_model, "w-pb", tmp_path, **opts)
    parts = [f"SN-{i:05d}" for i in range(150)]
    try:
        wait_ready(rclient, a, b, names=("w-pa", "w-pb"))
        pipe = rclient.pipeline(transaction=False)
        for i, part in enumerate(parts):
            for j, view in enumerate(("top", "side")):
                pipe.xadd(keys.frames(line), encode_frame(
                    "cam1", f"{part}-{view}", time.time(), frame_jpegs[(i + j) % len(frame_jpegs)],
                    "jpeg", part=part, view=view))
        pipe.execute()
        wait_for(lambda: rclient.xlen(keys.parts(line)) >= 30, 120, "30 verdicts", (a, b))
        a.p.send_signal(signal.SIGKILL)
        a.p.wait(10)
        wait_for(lambda: rclient.xlen(keys.parts(line)) >= len(parts), 240, "all verdicts",
                 (b,))
        time.sleep(1.0)  # a second verdict would show up now
        verdicts = [PartVerdict.from_fields(f) for _, f in rclient.xrange(keys.parts(line))]
        assert sorted(v.part_id for v in verdicts) == parts
        assert {v.verdict for v in verdicts} <= {"pass", "reject"}
        assert all(sorted(v.views) == ["side", "top"] for v in verdicts)
        assert {v.worker for v in verdicts} == {"w-pa", "w-pb"}
    finally:
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGTERM)
