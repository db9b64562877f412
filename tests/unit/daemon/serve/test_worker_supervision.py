"""Each of the worker's tasks killed in turn: the failure is logged and counted, the task comes
back, the heartbeat says what happened, and no frame is lost. One that keeps failing ends the
worker (non-zero exit in `rlrctl worker`). With no model the worker waits and reads nothing."""

from __future__ import annotations

import asyncio

import pytest

from daemon.serve.serving import ServingSet
from daemon.serve.worker import Worker
from daemon.wire.heartbeat import judge
from tests.unit.daemon.serve.helpers import HIGH, Recording, frame, results_of, run, settings


class Breaking(Recording):
    """Memory streams whose `method` raises an unexpected error its first `times` calls."""

    def __init__(self, method: str, times: int = 1) -> None:
        super().__init__()
        self.method, self.times = method, times
        original = getattr(self, method)

        async def broken(*args, **kwargs):
            if self.times > 0:
                self.times -= 1
                raise RuntimeError(f"{method} broke")
            return await original(*args, **kwargs)

        setattr(self, method, broken)


@pytest.mark.parametrize(("method", "task"), [
    ("read", "reader"), ("claim_stale", "claimer"), ("backlog", "backlog"),
    ("heartbeat", "heartbeat"), ("publish", "publisher"),
])
def test_a_task_killed_once_comes_back_and_no_frame_is_lost(engines, method, task):
    streams = Breaking(method)
    for i in range(8):
        streams.add("line1", frame(i))
    w = Worker(settings(), engines(default=HIGH), streams)
    stats = run(w, idle_s=1.5)
    assert streams.times == 0, f"{method} was never called"
    snapshot = w.supervisor.tasks[task]
    assert snapshot.restarts == 1 and snapshot.last_error == f"RuntimeError: {method} broke"
    if method == "publish":
        # that batch's frames were released, not held: a redelivery (XAUTOCLAIM on Redis)
        # scores them; the memory port does not redeliver, so they are still pending here
        assert stats.done + len(streams.pending) == 8
    else:
        assert sorted(r.frame_id for r in results_of(streams)) == \
            sorted(f"cam-a-{i}" for i in range(8))
        assert streams.pending == {}
    assert w.fatal is None and not w.hard_stopped
    beats = [b for b in streams.beats if b["tasks"].get(task, {}).get("restarts")]
    if method != "heartbeat" and beats:  # the heartbeat after the failure tells it
        assert beats[-1]["tasks"][task]["error"] == f"RuntimeError: {method} broke"


def test_the_batcher_killed_mid_batch_releases_its_frames_and_comes_back(engines):
    streams = Breaking("dead_letter")  # the batcher dead-letters bad frames itself
    streams.add("line1", {**frame(0), b"data": b"not a png"})
    streams.add("line1", frame(1))
    w = Worker(settings(batch_size=1), engines(default=HIGH), streams)
    run(w, idle_s=1.0)
    assert w.supervisor.tasks["batcher"].restarts == 1
    assert [r.frame_id for r in results_of(streams)] == ["cam-a-1"]  # it went on serving
    assert not w._held  # nothing stays held by a task that died


def test_a_task_that_keeps_failing_ends_the_worker(engines):
    streams = Breaking("read", times=1_000)
    streams.add("line1", frame(0))
    w = Worker(settings(task_max_failures=3, task_failure_window_s=60), engines(default=HIGH),
               streams)
    asyncio.run(asyncio.wait_for(w.run(), 30))
    assert w.fatal is not None and "task reader" in str(w.fatal)
    assert w.hard_stopped and w.supervisor.tasks["reader"].state == "failed"
    assert streams.pending == {} and streams.cursor["line1"] == 0  # nothing was taken


def test_while_a_task_is_down_the_worker_is_degraded_not_ready(engines):
    streams = Breaking("backlog", times=1_000)
    w = Worker(settings(task_max_failures=100), engines(default=HIGH), streams)
    run(w, idle_s=1.5)
    degraded = [b for b in streams.beats if b["status"] == "degraded"]
    assert degraded, [b["status"] for b in streams.beats]
    verdict = judge(degraded[-1], now=degraded[-1]["updated_at"])
    assert not verdict.healthy and "backlog" in verdict.why
    assert judge(degraded[-1], now=degraded[-1]["updated_at"], live=True).healthy


def test_with_no_model_the_worker_waits_reads_nothing_and_says_so(engines):
    streams = Recording()
    streams.add("line1", frame(0))
    w = Worker(settings(), None, streams)

    async def main():
        task = asyncio.create_task(w.run())
        await asyncio.sleep(1.0)
        beat = dict(streams.beats[-1])
        w.request_stop()
        await asyncio.wait_for(task, 30)
        return beat

    beat = asyncio.run(main())
    assert beat["status"] == "waiting_for_model" and beat["model_version"] is None
    assert streams.cursor["line1"] == 0 and results_of(streams) == []  # left in the stream
    assert not judge(beat, now=beat["updated_at"]).healthy
    assert judge(beat, now=beat["updated_at"], live=True).healthy  # alive: do not restart


def test_a_model_that_goes_away_stops_reading_and_one_that_comes_back_serves(engines):
    streams = Recording()
    w = Worker(settings(), engines(default=HIGH), streams)

    async def main():
        task = asyncio.create_task(w.run())
        await asyncio.sleep(0.5)
        model = w.serving
        w._swap(ServingSet(None))  # the rollout's versions were released
        await asyncio.sleep(0.3)
        streams.add("line1", frame(0))
        await asyncio.sleep(0.7)
        waiting = (w.status, streams.cursor["line1"])
        w._swap(model)
        await asyncio.sleep(1.5)
        w.request_stop()
        await asyncio.wait_for(task, 30)
        return waiting

    assert asyncio.run(main()) == ("waiting_for_model", 0)
    assert [r.frame_id for r in results_of(streams)] == ["cam-a-0"]


def test_the_heartbeat_carries_each_tasks_progress_and_a_stuck_reader_fails_readiness(engines):
    streams = Recording()
    w = Worker(settings(), engines(default=HIGH), streams)
    run(w, idle_s=1.0)
    beat = next(b for b in reversed(streams.beats) if b["status"] == "ready")
    assert {"reader", "batcher", "claimer", "backlog", "heartbeat"} <= set(beat["tasks"])
    assert all(t["state"] == "running" for t in beat["tasks"].values())
    now = beat["updated_at"]
    assert judge(beat, now=now).healthy
    stuck = {**beat, "loop_at": now + 100,
             "tasks": {**beat["tasks"], "reader": {**beat["tasks"]["reader"],
                                                   "progress_at": now - 100}}}
    verdict = judge(stuck, now=now + 100)
    assert not verdict.healthy and "reader has not polled" in verdict.why
