"""The worker on in-memory streams with a real (tiny) model: every frame gets exactly one
outcome, batching, poison frames, redelivery, replays, alerts, masks, backpressure, Redis
outages, shutdown and heartbeats."""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from daemon.serve.memory_io import MemoryStreams
from daemon.serve.served_model import ServedModel
from daemon.serve.worker import Worker
from daemon.wire.codec import decode_mask
from daemon.wire.groups import Claimed, Delivery
from tests.unit.daemon.serve.helpers import HIGH, LOW, Recording, frame, results_of, run, settings

# ----------------------------------------------------------------------------- outcomes


@pytest.mark.parametrize("device_decode", ["no", "yes"])
def test_every_frame_gets_exactly_one_result(engines, device_decode, monkeypatch):
    import daemon.serve.decode as decode

    on_device = []  # JPEG chunks decoded by the device path (here the CPU's torchvision)
    real = decode.decode_jpegs
    monkeypatch.setattr(decode, "decode_jpegs", lambda d, *a: on_device.append(len(d)) or
                        real(d, *a))
    engine = engines(default=LOW)
    streams = MemoryStreams()
    frames = [frame(i, cam, enc) for i, (cam, enc) in
              enumerate([("cam-a", "png"), ("cam-b", "jpeg"), ("cam-a", "raw")] * 3)]
    for f in frames:
        streams.add("line1", f)
    w = Worker(settings(device_decode=device_decode), engine, streams)
    stats = run(w)
    assert sum(on_device) == (3 if device_decode == "yes" else 0)
    results = results_of(streams)
    assert sorted(r.frame_id for r in results) == sorted(f["frame_id"].decode() for f in frames)
    assert streams.pending == {}
    assert streams.dlq["line1"] == []
    assert stats.done == stats.read == len(frames)
    for r in results:
        assert np.isfinite(r.score)
        assert r.threshold == LOW and r.is_anomaly
        assert r.model_version == engine.version and r.worker == "w1"
        assert r.latency_ms >= 0 and r.infer_ms > 0
    assert streams.closed


def test_queued_frames_are_batched(engines):
    streams = Recording()
    for i in range(12):
        streams.add("line1", frame(i))
    stats = run(Worker(settings(batch_size=4), engines(default=HIGH), streams))
    assert sum(streams.batches) == 12
    assert max(streams.batches) <= 4
    assert stats.batches == len(streams.batches) < 12


def test_frames_of_any_size_are_scored(engines):
    streams = MemoryStreams()
    for i, size in enumerate((16, 64, 200)):
        streams.add("line1", frame(i, size=size))
    stats = run(Worker(settings(), engines(default=HIGH), streams))
    assert stats.done == 3 and streams.dlq["line1"] == []


def _poison() -> dict[str, tuple[str, dict]]:
    """frame id -> (expected reason, fields)."""
    good = frame(0)
    jpeg = frame(1, encoding="jpeg")
    png = frame(2)
    wide = io.BytesIO()
    Image.fromarray(np.zeros((1, 300), np.uint8)).save(wide, format="PNG")

    def bad(fid, **changes):
        return {**good, "frame_id": fid.encode(), **changes}

    no_v = bad("no-v")
    del no_v["v"]
    no_ts = bad("no-ts")
    del no_ts["ts"]
    return {
        "no-v": ("malformed", no_v),
        "no-ts": ("malformed", no_ts),
        "v2": ("unsupported_version", bad("v2", v=b"2")),
        "big": ("oversized", bad("big", data=b"\xff" * 9000)),
        "garbage": ("corrupt", bad("garbage", encoding=b"jpeg", data=b"garbage" * 10)),
        "cut": ("corrupt", bad("cut", encoding=b"jpeg", data=jpeg["data"][:200])),
        "png-as-jpeg": ("corrupt", bad("png-as-jpeg", encoding=b"jpeg", data=png["data"])),
        "wide": ("bad_dimensions", bad("wide", data=wide.getvalue())),
        "raw-short": ("malformed", bad("raw-short", encoding=b"raw", shape=b"32,32,3",
                                       dtype=b"uint8", data=b"\x00" * 100)),
        "raw-dtype": ("malformed", bad("raw-dtype", encoding=b"raw", shape=b"8,8",
                                       dtype=b"float32", data=b"\x00" * 256)),
        "inf-ts": ("malformed", bad("inf-ts", ts=b"inf")),
        "text-ts": ("malformed", bad("text-ts", ts=b"yesterday")),
        "spaced": ("malformed", bad("spaced", camera=b"cam a")),
    }


@pytest.mark.parametrize("device_decode", ["no", "yes"])
def test_poison_frames_are_dead_lettered_and_good_frames_still_scored(engines, device_decode):
    streams = MemoryStreams()
    poison = _poison()
    good_ids = []
    for i, (_, fields) in enumerate(poison.values()):
        streams.add("line1", fields)
        good = frame(100 + i)
        good_ids.append(good["frame_id"].decode())
        streams.add("line1", good)
    stats = run(Worker(settings(device_decode=device_decode), engines(default=HIGH), streams))

    letters = streams.dlq["line1"]
    got = {letter.original.get("frame_id").decode(): letter.reason for letter in letters}
    assert got == {fid: reason for fid, (reason, _) in poison.items()}
    assert all(letter.worker == "w1" and letter.kind == "frame" and letter.detail
               for letter in letters)
    big = next(letter for letter in letters if letter.reason == "oversized")
    assert "data" not in big.original and b"9000 bytes" in big.original["data_dropped"]
    assert sorted(r.frame_id for r in results_of(streams)) == sorted(good_ids)
    assert streams.pending == {}
    assert stats.dead_lettered == len(poison) == streams.stats["line1"]["dead_lettered"]


class Redelivering(MemoryStreams):
    """Hands out `claims` once from claim_stale, as XAUTOCLAIM would after a crash."""

    def __init__(self, claims: Claimed):
        super().__init__()
        self.claims = claims

    async def claim_stale(self, min_idle_ms, count):
        claims, self.claims = self.claims, Claimed([], [])
        return claims


def test_a_frame_delivered_too_often_is_dead_lettered(engines):
    streams = Redelivering(Claimed([
        Delivery("line1", "1-1", {k.encode(): v for k, v in frame(1).items()}, 4),
        Delivery("line1", "1-2", {k.encode(): v for k, v in frame(2).items()}, 3),
    ], []))
    streams.pending = {("line1", "1-1"): 4, ("line1", "1-2"): 3}
    stats = run(Worker(settings(max_deliveries=3), engines(default=HIGH), streams))
    [letter] = streams.dlq["line1"]
    assert (letter.reason, letter.source_id, letter.deliveries) == \
        ("too_many_deliveries", "1-1", 4)
    assert "RLR_MAX_DELIVERIES" in letter.detail
    assert [r.frame_id for r in results_of(streams)] == ["cam-a-2"]  # the third try is served
    assert streams.pending == {}
    assert stats.dead_lettered == 1 and stats.done == 1


def test_a_frame_trimmed_before_it_was_finished_is_dead_lettered(engines):
    streams = Redelivering(Claimed([], [Delivery("line1", "7-0", {}, 0)]))
    run(Worker(settings(), engines(default=HIGH), streams))
    [letter] = streams.dlq["line1"]
    assert (letter.reason, letter.source_id) == ("trimmed", "7-0")
    assert "RLR_FRAMES_MAXLEN" in letter.detail


def test_a_replayed_frame_gets_one_result(engines):
    streams = MemoryStreams()
    streams.add("line1", frame(1))
    streams.add("line1", frame(2))
    streams.add("line1", frame(1))
    stats = run(Worker(settings(), engines(default=HIGH), streams))
    assert Counter(r.frame_id for r in results_of(streams)) == {"cam-a-1": 1, "cam-a-2": 1}
    assert stats.replayed == 1 and stats.done == 2
    assert streams.pending == {}


def test_inference_failure_leaves_frames_pending_for_redelivery(engines):
    class Broken(ServedModel):
        def infer(self, images):
            raise RuntimeError("CUDA out of memory")

    good = engines(default=HIGH)
    engine = Broken(good.model, good.manifest, good.device)
    streams = MemoryStreams()
    for i in range(3):
        streams.add("line1", frame(i))
    w = Worker(settings(), engine, streams)
    run(w)
    assert results_of(streams) == [] and streams.dlq["line1"] == []
    assert len(streams.pending) == 3
    assert "CUDA out of memory" in w.last_error


def test_a_memory_error_while_decoding_leaves_the_frame_for_redelivery(engines, monkeypatch):
    import daemon.serve.decode as decode

    real = decode.decode_frame

    def short_of_memory(f, *a):
        if f.frame_id == "cam-a-1":
            raise MemoryError("cannot allocate")
        return real(f, *a)

    monkeypatch.setattr(decode, "decode_frame", short_of_memory)
    streams = MemoryStreams()
    for i in range(3):
        streams.add("line1", frame(i))
    run(Worker(settings(), engines(default=HIGH), streams))
    assert streams.dlq["line1"] == []  # not "corrupt": the host, not the frame, was short
    assert sorted(r.frame_id for r in results_of(streams)) == ["cam-a-0", "cam-a-2"]
    assert len(streams.pending) == 1


# ----------------------------------------------------------------------------- alerts, masks


def test_k_of_n_raises_one_alert_per_camera_with_evidence(engines):
    streams = MemoryStreams()
    for i in range(4):
        for cam in ("cam-a", "cam-b"):
            streams.add("line1", frame(i, cam))
    stats = run(Worker(settings(alert_k=2, alert_n=3, alert_cooldown_s=60),
                        engines(default=LOW), streams))
    alerts = {a.camera: a for _, a in streams.alerts["line1"]}
    assert len(streams.alerts["line1"]) == 2 and stats.alerts == 2
    result_ids = {res.frame_id: rid for rid, res in streams.results["line1"]}
    for cam in ("cam-a", "cam-b"):
        alert = alerts[cam]
        assert alert.rule == "2/3" and alert.line == "line1"
        assert alert.frame_ids == [f"{cam}-0", f"{cam}-1"]
        assert alert.result_ids == [result_ids[f] for f in alert.frame_ids]
        assert alert.threshold == LOW and len(alert.scores) == 2


def test_a_high_threshold_raises_no_alert(engines):
    streams = MemoryStreams()
    for i in range(6):
        streams.add("line1", frame(i))
    stats = run(Worker(settings(alert_k=1, alert_n=1), engines(default=HIGH), streams))
    results = results_of(streams)
    assert len(results) == 6
    assert not any(r.is_anomaly for r in results)
    assert all(r.mask is None for r in results)  # masks="anomalous"
    assert streams.alerts["line1"] == [] and stats.alerts == 0


def test_an_uncalibrated_model_reports_normal_frames_without_threshold(engines):
    streams = MemoryStreams()
    for i in range(3):
        streams.add("line1", frame(i))
    run(Worker(settings(alert_k=1, alert_n=1, masks="always"), engines(), streams))
    results = results_of(streams)
    assert len(results) == 3
    assert all(r.threshold is None and not r.is_anomaly and r.mask is None for r in results)
    assert streams.alerts["line1"] == []


def test_the_frame_class_picks_its_threshold(engines):
    streams = MemoryStreams()
    streams.add("line1", frame(1, product_class="widget"))
    streams.add("line1", frame(2, product_class="gear"))  # unknown class: the default
    streams.add("line1", frame(3))
    run(Worker(settings(), engines(default=LOW, widget=HIGH), streams))
    by_id = {r.frame_id: r for r in results_of(streams)}
    assert (by_id["cam-a-1"].threshold, by_id["cam-a-1"].is_anomaly) == (HIGH, False)
    assert by_id["cam-a-1"].product_class == "widget"
    assert (by_id["cam-a-2"].threshold, by_id["cam-a-2"].is_anomaly) == (LOW, True)
    assert (by_id["cam-a-3"].threshold, by_id["cam-a-3"].is_anomaly) == (LOW, True)


@pytest.mark.parametrize("threshold, anomalous", [(LOW, True), (HIGH, False)])
def test_masks_always_gives_every_result_a_mask_at_model_size(engines, threshold, anomalous):
    engine = engines(default=threshold)
    streams = MemoryStreams()
    for i in range(3):
        streams.add("line1", frame(i))
    run(Worker(settings(masks="always"), engine, streams))
    results = results_of(streams)
    assert len(results) == 3
    for r in results:
        mask = decode_mask(r.mask)
        assert mask.shape == (engine.image_size, engine.image_size)
        assert mask.all() if anomalous else not mask.any()


def test_masks_never_unless_the_frame_asks(engines):
    streams = MemoryStreams()
    streams.add("line1", frame(1))
    streams.add("line1", frame(2, want_mask=True))
    run(Worker(settings(masks="never"), engines(default=LOW), streams))
    by_id = {r.frame_id: r for r in results_of(streams)}
    assert by_id["cam-a-1"].mask is None
    assert decode_mask(by_id["cam-a-2"].mask).all()


def test_masks_anomalous_only_on_anomalous_frames(engines):
    streams = MemoryStreams()
    streams.add("line1", frame(1, product_class="widget"))
    streams.add("line1", frame(2))
    run(Worker(settings(), engines(default=LOW, widget=HIGH), streams))
    by_id = {r.frame_id: r for r in results_of(streams)}
    assert by_id["cam-a-1"].mask is None
    assert by_id["cam-a-2"].mask is not None


# ----------------------------------------------------------------------------- load, outages


def test_old_frames_are_skipped_under_backlog_and_fresh_ones_served(engines):
    streams = MemoryStreams()
    old = [frame(i, ts=time.time() - 60) for i in range(20)]
    for f in old:
        streams.add("line1", f)
    fresh = frame(99, ts=time.time() + 120)  # stays fresh however slow the test runs
    streams.add("line1", fresh)
    stats = run(Worker(settings(backlog_limit=5, frames_maxlen=100), engines(default=HIGH),
                        streams))
    skipped = streams.stats["line1"].get("skipped", 0)
    results = results_of(streams)
    assert skipped > 0 and stats.skipped == skipped
    assert len(results) + skipped == 21
    assert "cam-a-99" in {r.frame_id for r in results}
    assert streams.pending == {}


def test_a_redis_outage_does_not_lose_frames(engines):
    streams = Recording()
    streams.fail_next_reads = 3
    for i in range(6):
        streams.add("line1", frame(i))
    w = Worker(settings(), engines(default=HIGH), streams)
    stats = asyncio.run(w.run_until_idle(idle_s=1.5, timeout_s=60))
    assert streams.fail_next_reads == 0
    assert sorted(r.frame_id for r in results_of(streams)) == [f"cam-a-{i}" for i in range(6)]
    assert stats.done == 6 and streams.pending == {}
    assert "simulated Redis outage" in w.last_error


# ----------------------------------------------------------------------------- lifecycle


class StopAfterReads(MemoryStreams):
    """Calls `worker.request_stop()` (as SIGTERM would) `times` times after `after` reads."""

    def __init__(self, after: int, times: int = 1):
        super().__init__()
        self.after, self.times, self.reads = after, times, 0
        self.delivered: list[str] = []
        self.worker: Worker | None = None

    async def read(self, count, block_ms):
        out = await super().read(count, block_ms)
        self.delivered += [d.fields[b"frame_id"].decode() for d in out]
        if out:
            self.reads += 1
            if self.reads == self.after:
                for _ in range(self.times):
                    self.worker.request_stop()
        return out


def test_stop_drains_the_frames_already_read(engines):
    streams = StopAfterReads(after=2)
    for i in range(20):
        streams.add("line1", frame(i))
    w = Worker(settings(batch_size=4), engines(default=HIGH), streams)
    streams.worker = w
    asyncio.run(asyncio.wait_for(w.run(), 60))  # no idle limit: only the stop ends it
    assert not w.hard_stopped
    assert len(streams.delivered) == 8
    assert sorted(r.frame_id for r in results_of(streams)) == sorted(streams.delivered)
    assert streams.pending == {}
    assert streams.cursor["line1"] == 8  # the rest stays in the stream for other workers
    assert streams.heartbeats == {}


def test_a_second_stop_cancels_and_leaves_frames_pending(engines):
    class SlowPublish(StopAfterReads):
        async def publish(self, items, window_n, joins=()):
            self.worker.request_stop()
            self.worker.request_stop()
            await asyncio.sleep(30)

    streams = SlowPublish(after=99)
    for i in range(4):
        streams.add("line1", frame(i))
    w = Worker(settings(), engines(default=HIGH), streams)
    streams.worker = w
    asyncio.run(asyncio.wait_for(w.run(), 20))
    assert w.hard_stopped
    assert results_of(streams) == []
    assert len(streams.pending) == 4  # another worker takes them over
    assert streams.closed


def test_heartbeat_says_ready_while_serving_and_is_cleared_after(engines):
    streams = Recording()
    for i in range(4):
        streams.add("line1", frame(i))
    w = Worker(settings(), engines(default=HIGH), streams)
    run(w, idle_s=0.6)
    assert streams.beats[0]["status"] == "starting"  # until the reader's first poll
    first = next(b for b in streams.beats if b["status"] != "starting")
    assert first["status"] == "ready"
    assert first["worker"] == "w1" and first["lines"] == ["line1"]
    assert first["model_version"] == w.serving.primary.version
    assert streams.heartbeats == {}
    assert w.status == "stopped"
