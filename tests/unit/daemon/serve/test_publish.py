"""The publisher's steps on the memory port: one publish call per batch, replays never judged,
the rules run in order with each one's output emitted before the next judges, and a rule's
reads of the shared state retried through outages like every sink call."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from daemon.errors import SourceUnavailable
from daemon.serve.memory_io import MemoryStreams
from daemon.serve.outage import Outages
from daemon.serve.prometheus import WorkerMetrics
from daemon.serve.publish import Publisher, Scored, WorkerStats
from daemon.serve.rules.alerts import AlertRule, KOfN
from daemon.serve.rules.base import Emits
from daemon.serve.settings import AlertSettings
from daemon.serve.verdicts import Verdict
from daemon.supervisor import Supervisor
from daemon.wire.groups import Delivery
from daemon.wire.schema import Frame, HealthEvent
from tests.unit.daemon.serve.helpers import Recording, settings


class Judging:
    """A rule that records what it was given and what the shared state said then."""

    def __init__(self, name: str, history: int = 0, emits: Emits | None = None) -> None:
        self.name, self.history, self.emits = name, history, emits or Emits()
        self.seen: list[list[str]] = []
        self.health_then: list[tuple[str, ...]] = []

    async def judge(self, batch, shared) -> Emits:
        self.seen.append([f.result.frame_id for f in batch])
        self.health_then.append(await shared.camera_health("line1", "cam-a"))
        return self.emits


def _publisher(sink, rules, **kw) -> tuple[Publisher, WorkerStats, Outages]:
    stats, outages, pool = WorkerStats(), Outages(), ThreadPoolExecutor(1)
    return Publisher(sink, settings(thumb_interval_s=0, **kw), rules, WorkerMetrics(), stats,
                     {}, outages.retry, lambda: pool, lambda items: list(items),
                     lambda error: None, Supervisor("test")), stats, outages


def _batch(frames: list[tuple[str, bool]], first_entry: int = 1) -> Scored:
    items = [(Delivery("line1", f"{first_entry + i}-0", {}, 1),
              Frame("cam-a", fid, time.time(), "jpeg", b"jpeg"))
             for i, (fid, _) in enumerate(frames)]
    verdicts = [Verdict("v1", 0.9 if bad else 0.1, 0.5, bad, None) for _, bad in frames]
    return Scored(items, verdicts, [], time.time(), 1.0)


def _publish(publisher: Publisher, *batches: Scored) -> None:
    async def go():
        for batch in batches:
            await publisher._publish_batch(batch, None)

    asyncio.run(go())


def test_one_publish_call_per_batch_keeping_the_longest_window_a_rule_reads():
    sink = Recording()
    publisher, stats, _ = _publisher(sink, [Judging("short", 2), Judging("long", 7)])
    _publish(publisher, _batch([("f1", True), ("f2", False), ("f3", True)]),
             _batch([("f4", True)], 4))
    assert sink.batches == [3, 1]
    assert stats.done == 4
    assert publisher._history == 7


def test_a_replayed_frame_is_counted_and_never_judged_again():
    rule = Judging("r")
    publisher, stats, _ = _publisher(MemoryStreams(), [rule])
    _publish(publisher, _batch([("f1", True), ("f2", True)]),
             _batch([("f2", True), ("f3", False)], 2))  # f2 redelivered
    assert rule.seen == [["f1", "f2"], ["f3"]]
    assert (stats.done, stats.replayed) == (3, 1)


def test_each_rule_judges_after_the_previous_ones_output_is_emitted():
    raised = HealthEvent("line1", "cam-a", "dark", "raised", 1.0, 1.0, {}, "w1")
    first, second = Judging("health", emits=Emits(health=(raised,))), Judging("after")
    publisher, _, _ = _publisher(MemoryStreams(), [first, second])
    _publish(publisher, _batch([("f1", False)]))
    assert first.health_then == [()]
    assert second.health_then == [("dark",)]


def test_alerts_go_out_once_per_cooldown_and_only_those_are_counted():
    sink = MemoryStreams()
    rule = AlertRule(AlertSettings(alert_k=1, alert_n=2, alert_cooldown_s=60))
    publisher, stats, _ = _publisher(sink, [KOfN(rule)])
    _publish(publisher, _batch([("f1", True), ("f2", True)]), _batch([("f3", True)], 3))
    assert [a.frame_ids for _, a in sink.alerts["line1"]] == [["f1"]]
    assert stats.alerts == 1
    assert sink.alerts["line1"][0][1].rule == "1/2"


def test_a_rules_read_of_the_shared_state_is_retried_through_an_outage():
    class Flaky(MemoryStreams):
        failures = 1

        async def camera_health(self, line, camera):
            if self.failures:
                self.failures -= 1
                raise SourceUnavailable("simulated Redis outage")
            return await super().camera_health(line, camera)

    rule = Judging("r")
    publisher, _, outages = _publisher(Flaky(), [rule])
    _publish(publisher, _batch([("f1", True)]))
    assert rule.health_then == [()]
    assert outages.last_error == "redis: simulated Redis outage" and not outages.unavailable
