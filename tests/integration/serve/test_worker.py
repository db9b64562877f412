"""Real workers against a real Redis: results, crashes, poison frames, outages, bursts."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import redis
from PIL import Image

from daemon.line.embedded import EmbeddedRedis
from daemon.line.producer import push_images
from daemon.models.status import line_stats
from daemon.wire import keys
from daemon.wire.codec import decode_mask
from daemon.wire.schema import encode_frame
from tests.integration.procs import (
    ROOT,
    daemon_env,
    dead_letters,
    pending,
    results,
    start_worker,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.slow


def _frames(jpegs: list[bytes], n: int) -> list[bytes]:
    return [jpegs[i % len(jpegs)] for i in range(n)]


def _check(redis_url: str, *args: str) -> int:
    env = daemon_env(redis_url, "unused")
    return subprocess.run([sys.executable, "-m", "daemon.cli", "check", *args], env=env,
                          cwd=ROOT, capture_output=True, timeout=60).returncode


def test_every_frame_gets_exactly_one_result(redis_url, line, rclient, served_model,
                                             frame_jpegs, tmp_path):
    w = start_worker(redis_url, line, served_model, "w-basic", tmp_path)
    try:
        wait_ready(rclient, w, names=("w-basic",))
        assert _check(redis_url, "--worker", "w-basic") == 0
        ids = push_images(rclient, line, "cam-a", _frames(frame_jpegs, 30), product_class="fabric")
        ids += push_images(rclient, line, "cam-b", _frames(frame_jpegs, 30))
        wait_for(lambda: len(results(rclient, line)) >= 60, 60, "60 results", (w,))
        time.sleep(0.5)  # a duplicate would show up now
        res = results(rclient, line)
        assert sorted(r.frame_id for r in res) == sorted(ids)
        assert pending(rclient, line) == 0
        assert {r.model_version for r in res} == {res[0].model_version}
        assert all(r.threshold is not None and r.latency_ms > 0 for r in res)
        anomalous = [r for r in res if r.is_anomaly]
        assert 0 < len(anomalous) < len(res)  # threshold at the median test score
        for r in res:  # masks come with anomalous frames only (RLR_MASKS=anomalous)
            assert (r.mask is not None) == r.is_anomaly
            if r.mask is not None:
                assert decode_mask(r.mask).any()
        assert {r.product_class for r in res if r.camera == "cam-a"} == {"fabric"}
    finally:
        assert w.stop(signal.SIGTERM) == 0
    assert rclient.get(keys.worker("w-basic")) is None  # heartbeat cleared on a clean stop
    assert _check(redis_url, "--worker", "w-basic") == 1


def _each_frame_once(rclient, line: str, ids: list[str]) -> Counter:
    """Asserts every frame got exactly one result and none was dead-lettered (after a pause in
    which a duplicate would show up); the results per worker."""
    time.sleep(1.0)
    res = results(rclient, line)
    counts = Counter(r.frame_id for r in res)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, "a frame got two results"
    assert not dead_letters(rclient, line)
    return Counter(r.worker for r in res)


def test_sigkill_mid_run_loses_no_frame_and_duplicates_none(redis_url, line, rclient,
                                                            served_model, frame_jpegs,
                                                            tmp_path):
    opts = {"backlog_limit": 5000, "frames_maxlen": 20000, "batch_size": 8}
    a = start_worker(redis_url, line, served_model, "w-a", tmp_path, **opts)
    b = start_worker(redis_url, line, served_model, "w-b", tmp_path, **opts)
    try:
        wait_ready(rclient, a, b, names=("w-a", "w-b"))
        ids = push_images(rclient, line, "cam-1", _frames(frame_jpegs, 300), maxlen=None)
        ids += push_images(rclient, line, "cam-2", _frames(frame_jpegs, 300), maxlen=None)
        wait_for(lambda: len(results(rclient, line)) >= 100, 120, "100 results", (a, b))
        a.p.send_signal(signal.SIGKILL)  # in the middle of the run, with frames in flight
        a.p.wait(10)
        wait_for(lambda: len(results(rclient, line)) >= len(ids), 240, "all results", (b,))
        wait_for(lambda: pending(rclient, line) == 0, 30, "no pending frames", (b,))
        by_worker = _each_frame_once(rclient, line, ids)
        assert by_worker["w-a"] > 0 and by_worker["w-b"] > 0
        claimed = [e for e in b.events() if e.get("event") == "frames_claimed"]
        assert claimed, "the survivor never took over the dead worker's pending frames"
    finally:
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGTERM)


def test_several_processes_on_one_device_share_a_line_at_full_rate_through_a_sigkill(
        redis_url, line, rclient, served_model, frame_jpegs, tmp_path):
    """N worker processes per device (one consumer group, as the systemd template and the
    Kubernetes deployment scale): every frame once, at the rate of a burst, with one of the
    three SIGKILLed while it holds frames."""
    opts = {"backlog_limit": 20000, "frames_maxlen": 50000, "batch_size": 32,
            "claim_idle_ms": 2000}
    names = ("w-n1", "w-n2", "w-n3")
    procs = [start_worker(redis_url, line, served_model, n, tmp_path, **opts) for n in names]
    try:
        wait_ready(rclient, *procs, names=names)
        ids = push_images(rclient, line, "cam-1", _frames(frame_jpegs, 1500), maxlen=None)
        ids += push_images(rclient, line, "cam-2", _frames(frame_jpegs, 1500), maxlen=None)
        wait_for(lambda: len(results(rclient, line)) >= 300, 120, "300 results", tuple(procs))
        procs[0].p.send_signal(signal.SIGKILL)
        procs[0].p.wait(10)
        wait_for(lambda: len(results(rclient, line)) >= len(ids), 300, "all results",
                 tuple(procs[1:]))
        wait_for(lambda: pending(rclient, line) == 0, 30, "no pending frames", tuple(procs[1:]))
        by_worker = _each_frame_once(rclient, line, ids)
        assert all(by_worker[n] > 0 for n in names), by_worker
    finally:
        procs[0].stop(signal.SIGKILL)
        for p in procs[1:]:
            p.stop(signal.SIGTERM)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def test_poison_frames_are_dead_lettered_while_good_frames_flow(redis_url, line, rclient,
                                                                served_model, frame_jpegs,
                                                                tmp_path):
    w = start_worker(redis_url, line, served_model, "w-poison", tmp_path,
                     max_payload_bytes=100_000, max_image_side=1000, max_deliveries=2)
    stream = keys.frames(line)
    now = time.time()
    noise = np.random.default_rng(0).integers(0, 255, (250, 250, 3), dtype=np.uint8)
    jpeg = frame_jpegs[0]
    poison = {
        "malformed": {"v": "1", "camera": "cam-p"},
        "unsupported_version": {**encode_frame("cam-p", "p-v9", now, jpeg, "jpeg"), "v": b"9"},
        "oversized": encode_frame("cam-p", "p-big", now, _png(noise), "png"),
        "corrupt": encode_frame("cam-p", "p-bad", now, b"\xff\xd8 not a jpeg", "jpeg"),
        "bad_dimensions": encode_frame("cam-p", "p-wide", now,
                                       _png(np.zeros((1, 1200), np.uint8)), "png"),
    }
    try:
        wait_ready(rclient, w, names=("w-poison",))
        good = push_images(rclient, line, "cam-g", _frames(frame_jpegs, 10))
        for fields in poison.values():
            rclient.xadd(stream, fields)
        rclient.xadd(stream, encode_frame("cam-p", "p-raw", now, b"\x00" * 10, "raw",
                                          shape=(4, 4, 3), dtype="uint8"))
        # a frame that already failed twice elsewhere (a worker died on it each time)
        ghost_id = _deliver_to_ghost(rclient, stream,
                                     encode_frame("cam-p", "p-retry", now, jpeg, "jpeg"))
        good += push_images(rclient, line, "cam-g", _frames(frame_jpegs, 10))
        want = {*poison, "too_many_deliveries"}
        wait_for(lambda: {d.reason for d in dead_letters(rclient, line)} >= want, 60,
                 "every poison frame dead-lettered", (w,))
        wait_for(lambda: len(results(rclient, line)) >= len(good), 60, "good results", (w,))
        letters = dead_letters(rclient, line)
        reasons = Counter(d.reason for d in letters)
        assert reasons["malformed"] == 2  # missing fields, raw bytes not matching the shape
        assert all(reasons[r] == 1 for r in want - {"malformed"})
        assert all(d.detail for d in letters)
        retry = next(d for d in letters if d.reason == "too_many_deliveries")
        assert retry.source_id == ghost_id and retry.deliveries > 2
        assert retry.original["frame_id"] == "p-retry"  # the frame is kept, not lost
        assert sorted(r.frame_id for r in results(rclient, line)) == sorted(good)
        assert line_stats(rclient, line)["dead_lettered"] == len(letters) == 7
        assert w.alive()
    finally:
        assert w.stop() == 0


def _deliver_to_ghost(client: redis.Redis, stream: str, fields: dict) -> str:
    """Add the frame and hand it to a consumer that never acks, marked as delivered twice long
    ago. Added and read in one transaction, so the running worker cannot read it first."""
    pipe = client.pipeline(transaction=True)
    pipe.xadd(stream, fields)
    pipe.xreadgroup("rlr-workers", "ghost", {stream: ">"}, count=1000)
    entry, reply = pipe.execute()
    assert any(eid == entry for eid, _ in reply[0][1])
    client.xclaim(stream, "rlr-workers", "ghost", 0, [entry], idle=600_000, retrycount=2)
    others = [eid for eid, f in reply[0][1] if eid != entry]
    if others:  # give back what the ghost read by accident, so it is processed normally
        client.xclaim(stream, "rlr-workers", "ghost", 0, others, idle=600_000, retrycount=0)
    return entry.decode()


def test_worker_survives_a_redis_restart(line, served_model, frame_jpegs, tmp_path):
    with EmbeddedRedis(tmp_path / "redis", port=0) as server:
        client = redis.Redis.from_url(server.url)
        w = start_worker(server.url, line, served_model, "w-restart", tmp_path)
        try:
            wait_ready(client, w, names=("w-restart",))
            ids = push_images(client, line, "cam-r", _frames(frame_jpegs, 40))
            wait_for(lambda: len(results(client, line)) >= 10, 60, "first results", (w,))
            server.restart(down_s=2.0)  # SIGKILL; the append-only file keeps acked work
            client = redis.Redis.from_url(server.url)
            ids += push_images(client, line, "cam-r", _frames(frame_jpegs, 40))
            wait_for(lambda: len(results(client, line)) >= len(ids), 90,
                     "results after the restart", (w,))
            res = results(client, line)
            assert sorted(r.frame_id for r in res) == sorted(ids)
            events = [e["event"] for e in w.events()]
            assert "redis_unavailable" in events and "redis_reconnected" in events
            wait_for(lambda: client.get(keys.worker("w-restart")), 10, "heartbeat back", (w,))
            assert w.alive()
        finally:
            assert w.stop() == 0


def test_burst_over_the_backlog_bound_skips_old_frames_and_counts_them(
        redis_url, line, rclient, served_model, frame_jpegs, tmp_path):
    w = start_worker(redis_url, line, served_model, "w-burst", tmp_path, backlog_limit=100,
                     frames_maxlen=20000, max_frame_age_s=1.0, batch_size=8)
    try:
        wait_ready(rclient, w, names=("w-burst",))
        rss_before = w.rss_mib()
        ids: list[str] = []
        for _ in range(6):  # 6 x 500 frames over ~3 s: far beyond what one CPU worker scores
            ids += push_images(rclient, line, "cam-burst", _frames(frame_jpegs, 500),
                               maxlen=None)
            time.sleep(0.5)

        def accounted():
            stats = line_stats(rclient, line)
            return len(results(rclient, line)) + stats.get("skipped", 0) >= len(ids)

        wait_for(accounted, 120, "every frame processed or skipped", (w,))
        res = results(rclient, line)
        skipped = line_stats(rclient, line).get("skipped", 0)
        assert skipped > 0 and len(res) > 0
        assert len(res) + skipped == len(ids)
        assert len({r.frame_id for r in res}) == len(res)
        # once the backlog is gone the line is live again: fresh frames are all scored
        fresh = push_images(rclient, line, "cam-burst", _frames(frame_jpegs, 8))
        wait_for(lambda: {r.frame_id for r in results(rclient, line)} >= set(fresh), 60,
                 "fresh frames after the burst", (w,))
        assert any(e.get("event") == "frames_skipped" for e in w.events())
        assert w.rss_mib() - rss_before < 300  # bounded: nothing queued per frame
        wait_for(lambda: pending(rclient, line) == 0, 10, "no pending frames", (w,))
    finally:
        assert w.stop() == 0
