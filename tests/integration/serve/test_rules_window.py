"""The k-of-n window's one definition (daemon/serve/rules/window.py), held by both ports: the
Redis port (its publish and alert scripts, on a real Redis) and the memory port return the
same windows and the same cooldown refusals for the same sequences, including several workers
of one line sharing one window."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio

from daemon.cli.settings import load_settings
from daemon.serve.memory_io import MemoryStreams
from daemon.serve.ports import Published
from daemon.serve.redis_io import RedisStreams
from daemon.serve.rules.alerts import AlertRule, KOfN
from daemon.serve.rules.base import Fresh
from daemon.serve.settings import AlertSettings
from daemon.wire.groups import Delivery
from daemon.wire.schema import Alert, Result

N = 3
# (camera, frame id, anomalous) in order; a frame id seen again is a replay
SEQUENCE = [("cam-a", "a1", True), ("cam-a", "a2", False), ("cam-b", "b1", True),
            ("cam-a", "a3", True), ("cam-a", "a3", True), ("cam-a", "a4", True),
            ("cam-b", "b2", False), ("cam-a", "a5", False), ("cam-a", "a6", True),
            ("cam-b", "b3", True), ("cam-a", "a7", True)]


def _result(camera: str, frame_id: str, anomalous: bool, i: int) -> Result:
    return Result(frame_id, camera, 0.9 if anomalous else 0.1234567 + i, anomalous, 0.5,
                  "sha256:v1", 1_700_000_000.25 + i, 1.0, 2.0, 3.0, "w", None)


def _batches(sizes: list[int]) -> list[list[tuple[Delivery, Result]]]:
    items = [(Delivery("L", f"{1000 + i}-0", {}, 1), _result(c, f, a, i))
             for i, (c, f, a) in enumerate(SEQUENCE)]
    out, at = [], 0
    for n in sizes:
        out.append(items[at:at + n])
        at += n
    return out


def _plain(pub: Published, frame_of: dict[str, str]) -> tuple:
    """A port's answer without its own entry ids: result ids named by their frame."""
    return (pub.new, [(w.frame_id, w.score, w.is_anomaly, frame_of.get(w.result_id), w.ts)
                      for w in pub.window])


async def _run(ports: list, batches) -> list[tuple]:
    """Publish the batches, the i-th through ports[i % len(ports)] (several workers)."""
    out, frame_of = [], {}
    for i, batch in enumerate(batches):
        line_batch = [(d._replace(stream=ports[0].lines[0]), res) for d, res in batch]
        published = await ports[i % len(ports)].publish(line_batch, N)
        for (_, res), pub in zip(batch, published, strict=True):
            if pub.new:
                frame_of[pub.result_id] = res.frame_id
            out.append((res, pub))
    return [(res.frame_id, _plain(pub, frame_of)) for res, pub in out]


async def _redis_ports(url: str, line: str, workers: int) -> list[RedisStreams]:
    ports = []
    for w in range(workers):
        s = load_settings(lines=line, consumer=f"w{w}", metrics_port=0)
        port = RedisStreams(redis.asyncio.Redis.from_url(url), s, f"w{w}")
        await port.ensure_groups()
        ports.append(port)
    return ports


@pytest.mark.parametrize("sizes, workers", [([1] * len(SEQUENCE), 1),
                                            ([4, 4, 3], 1),  # a camera's frames in one call
                                            ([2, 3, 1, 5], 2)])  # two workers, one window
def test_both_ports_keep_the_same_window(redis_url, line, sizes, workers):
    async def go():
        ports = await _redis_ports(redis_url, line, workers)
        try:
            in_redis = await _run(ports, _batches(sizes))
        finally:
            for p in ports:
                await p.close()
        in_memory = await _run([MemoryStreams([line])], _batches(sizes))
        return in_redis, in_memory

    in_redis, in_memory = asyncio.run(go())
    assert in_redis == in_memory
    windows = dict(in_memory)
    assert windows["a4"] == (True, [("a4", 0.9, True, "a4", 1_700_000_005.25),
                                    ("a3", 0.9, True, "a3", 1_700_000_003.25),
                                    ("a2", 0.123457 + 1, False, "a2", 1_700_000_001.25)])
    assert windows["a5"] == (True, [])  # not anomalous: no window to judge
    assert [new for _, (new, _) in in_memory].count(False) == 1  # the replayed a3


def test_both_ports_fire_the_same_alerts(redis_url, line):
    """The rule's decision over each port's windows gives the same alerts."""
    rule = KOfN(AlertRule(AlertSettings(alert_k=2, alert_n=N, alert_cooldown_s=0)),
                camera_health=False)

    async def fired(port) -> list[list[str]]:
        out = []
        for batch in _batches([2, 3, 1, 5]):
            batch = [(d._replace(stream=line), res) for d, res in batch]
            published = await port.publish(batch, N)
            emits = await rule.judge([Fresh(line, res, pub) for (_, res), pub
                                      in zip(batch, published, strict=True) if pub.new], port)
            out += [a.frame_ids for a, _ in emits.alerts]
        return out

    async def go():
        [port] = await _redis_ports(redis_url, line, 1)
        try:
            return await fired(port), await fired(MemoryStreams([line]))
        finally:
            await port.close()

    in_redis, in_memory = asyncio.run(go())
    assert in_redis == in_memory == [["a1", "a3"], ["a3", "a4"], ["a4", "a6"], ["b1", "b3"],
                                     ["a6", "a7"]]


def _alert(line: str, camera: str) -> Alert:
    return Alert("id", line, camera, time.time(), "2/3", ["f"], [0.9], ["1-0"], "v", 0.5)


def test_both_ports_refuse_an_alert_while_its_camera_cools_down(redis_url, line):
    async def sequence(ports) -> list[bool]:
        """Whether each alert went out; alternating workers where there are two."""
        raised = []
        for i, (camera, cooldown_s, wait_s) in enumerate([
                ("cam-a", 0.3, 0), ("cam-a", 0.3, 0), ("cam-b", 0.3, 0), ("cam-a", 0.3, 0.4),
                ("cam-a", 0.3, 0), ("cam-c", 0, 0), ("cam-c", 0, 0)]):
            await asyncio.sleep(wait_s)
            port = ports[i % len(ports)]
            raised.append(await port.raise_alert(_alert(port.lines[0], camera), cooldown_s)
                          is not None)
        return raised

    async def go():
        ports = await _redis_ports(redis_url, line, 2)
        try:
            return await sequence(ports), await sequence([MemoryStreams([line])])
        finally:
            for p in ports:
                await p.close()

    in_redis, in_memory = asyncio.run(go())
    assert in_redis == in_memory == [True, False, True, True, False, True, True]
