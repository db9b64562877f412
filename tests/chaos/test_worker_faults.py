"""The worker, its network and its inputs misbehave: the worker stopped (SIGSTOP) and resumed,
a slow network that also drops connections, a rollout that vanishes or is corrupted, frame ids
that used to collide, a task that keeps failing, frames with impossible timestamps or sizes,
dead consumers. Regression tests for the defects that left a worker alive and silent."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from daemon.models.registry import Registry
from daemon.wire import keys
from daemon.wire.groups import ConsumerGroup, run_sync
from daemon.wire.schema import encode_frame
from tests.chaos.line import CHAOS_SETTINGS, wait_until
from tests.chaos.proxy import FlakyProxy
from tests.helpers import png_header
from tests.integration.procs import Proc, daemon_env

STALL_S = CHAOS_SETTINGS["stall_s"]


def _check(line, *args: str) -> subprocess.CompletedProcess:
    """The real `rlrctl check` against the scenario's Redis."""
    return subprocess.run([sys.executable, "-m", "daemon.cli", "check", "--worker",
                           line.worker_name, "--redis-url", line.url, *args],
                          capture_output=True, text=True, timeout=60)


def test_worker_stopped_and_resumed(chaos, frame_jpegs, record):
    line = chaos()
    line.start_worker()
    line.wait_status("ready")
    assert _check(line).returncode == 0
    line.push(frame_jpegs[:6])
    line.worker.send(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        wait_until(lambda: not line.probe()[0], STALL_S + 5, "the probe to notice the stop")
        assert time.monotonic() - t0 <= STALL_S + 5
        stopped = _check(line)
        assert stopped.returncode == 1 and "no live worker heartbeat" in stopped.stdout + \
            stopped.stderr
        line.push(frame_jpegs[6:14])  # nobody reads them while it is stopped
    finally:
        line.worker.send(signal.SIGCONT)
    line.wait_settled(timeout=60)
    line.wait_status("ready")
    wait_until(lambda: _check(line).returncode == 0, 30, "rlrctl check to pass again", 1.0)
    record(line.figures("worker SIGSTOP 6 s, SIGCONT"))


def test_slow_network_that_drops_connections(chaos, frame_jpegs, record):
    line = chaos()
    proxy = FlakyProxy(line.server.port, delay_s=0.03)
    try:
        line.start_worker(url=proxy.url)
        line.wait_status("ready")
        for start in range(0, 24, 6):
            line.push(frame_jpegs[start:start + 6])
            time.sleep(0.7)
            proxy.cut()  # mid-read, mid-publish: whatever was in flight
        line.wait_settled(timeout=90)
        line.wait_status("ready")
        assert "Unclosed" not in line.worker.log_path.read_text()
        record(line.figures("slow network (30 ms), 4 cuts",
                            note=f"{proxy.cuts} connection cuts"))
    finally:
        proxy.close()


def test_a_rollout_that_vanishes_keeps_the_line_served_and_a_new_worker_waits(
        chaos, frame_jpegs, record, served_model):
    line = chaos(aof=False)
    registry = Registry(line.client)
    version = registry.register_file(served_model, "chaos").id
    registry.deploy(line.line, version, by="chaos")
    line.start_worker(model=None, rollout_poll_s=0.5)  # follows the line's rollout
    line.wait_status("ready")
    line.server.restart(down_s=0.5)  # without persistence: the rollout and registry are gone
    ids = line.push(frame_jpegs[:8])
    line.wait_settled(ids, timeout=60)
    beat = wait_until(lambda: (b := line.heartbeat()) and b["rollout_warnings"] and b, 15,
                      "the heartbeat to say the rollout record is gone")
    assert beat["status"] == "ready" and beat["models"] == [version]
    assert "rollout record missing" in beat["rollout_warnings"][line.line]
    # A worker that starts now has nothing to serve: it waits and says why, and lives on.
    line.worker_name, old = "chaos-fresh", line.worker
    fresh = line.start_worker(model=None)
    beat = line.wait_status("waiting_for_model")
    time.sleep(2)
    assert fresh.alive() and beat["model_version"] is None
    assert not line.probe()[0] and line.probe(live=True)[0]
    assert any(e.get("event") == "waiting_for_model" for e in fresh.events())
    fresh.stop()
    line.worker = old
    record(line.figures("rollout vanished (no persistence)", ids=ids))


def test_a_corrupt_rollout_record_does_not_stop_the_worker(chaos, frame_jpegs, record,
                                                           served_model):
    line = chaos()
    registry = Registry(line.client)
    version = registry.register_file(served_model, "chaos").id
    registry.deploy(line.line, version, by="chaos")
    line.start_worker(model=None, rollout_poll_s=0.5)
    line.wait_status("ready")
    line.client.hset(keys.alias(line.line), "rollout", "not json{")
    ids = line.push(frame_jpegs[:6])
    line.wait_settled(ids)
    beat = wait_until(lambda: (b := line.heartbeat()) and b["rollout_warnings"] and b, 15,
                      "the heartbeat to report the corrupt record")
    assert beat["status"] == "ready" and "corrupt" in beat["rollout_warnings"][line.line]
    record(line.figures("corrupt rollout record"))


def test_frame_ids_that_collided_in_the_dedup_key_get_a_result_each(chaos, frame_jpegs,
                                                                     record):
    line = chaos()
    line.start_worker()
    line.wait_status("ready")
    pairs = [("camC:x", "p1-col"), ("camC", "x:p1-col")]  # one key before the fix
    for camera, frame_id in pairs:
        line.client.xadd(keys.frames(line.line),
                         encode_frame(camera, frame_id, time.time(), frame_jpegs[0], "jpeg"))
        line.sent.append(frame_id)
    line.wait_settled(timeout=60)
    got = sorted((r.camera, r.frame_id) for r in line.results())
    assert got == sorted(pairs)
    assert line.heartbeat()["replayed"] == 0
    record(line.figures("camera / frame ids with ':'"))


def test_a_task_that_keeps_failing_makes_the_worker_exit_non_zero(chaos, frame_jpegs):
    line = chaos()
    line.client.set(keys.frames(line.line), "not a stream")  # XREADGROUP: WRONGTYPE, always
    worker = line.start_worker(task_max_failures=3, task_failure_window_s=60)
    rc = worker.p.wait(120)
    assert rc == 3
    text = worker.log_path.read_text()
    assert "supervisor_gave_up" in text and "WRONGTYPE" in text
    assert text.strip().splitlines()[-1].startswith("error: task ")  # one line says why


def test_impossible_timestamps_and_huge_images_are_dead_lettered_with_the_right_reason(
        chaos, frame_jpegs, record):
    line = chaos()
    line.start_worker()
    line.wait_status("ready")
    now = time.time()
    cases = {"ts-negative": (-5.0, frame_jpegs[0], "jpeg"),
             "ts-millis": (1e12, frame_jpegs[0], "jpeg"),
             "ts-future": (now + 3600, frame_jpegs[0], "jpeg"),
             "bomb": (now, png_header(100_000, 100_000), "png")}
    for frame_id, (ts, data, encoding) in cases.items():
        line.client.xadd(keys.frames(line.line),
                         encode_frame("cam", frame_id, ts, data, encoding))
        line.sent.append(frame_id)
    line.wait_settled(timeout=60)
    reasons = {d.original.get("frame_id"): d.reason for d in line.dead_letters()}
    assert reasons == {"ts-negative": "malformed", "ts-millis": "malformed",
                       "ts-future": "clock_skew", "bomb": "bad_dimensions"}
    record(line.figures("bad timestamps, 100000x100000 PNG"))


def test_dead_consumers_are_pruned_from_the_group(chaos, frame_jpegs):
    line = chaos()
    key = keys.frames(line.line)
    ghost = ConsumerGroup("rlr-workers", "dead-worker-7", {key: line.line})
    run_sync(line.client, ghost.ensure())
    line.client.xadd(key, encode_frame("cam", "f-ghost", time.time(), frame_jpegs[0], "jpeg"))
    got = run_sync(line.client, ghost.read(1, None))  # a worker took a frame, finished it,
    assert run_sync(line.client, ghost.ack(got)) == 1  # and died
    assert "dead-worker-7" in {c["name"].decode()
                               for c in line.client.xinfo_consumers(key, "rlr-workers")}
    line.start_worker(prune_consumers_s=1)
    line.wait_status("ready")

    def consumers():
        return {c["name"].decode() for c in line.client.xinfo_consumers(key, "rlr-workers")}

    wait_until(lambda: consumers() == {line.worker_name}, 30, "the dead consumer to go")
    events = [e for e in line.worker.events() if e.get("event") == "consumers_pruned"]
    assert events and events[0]["consumers"] == ["dead-worker-7"]


def test_overload_warnings_are_rate_limited(chaos, frame_jpegs):
    line = chaos()
    old = time.time() - 30
    for i in range(300):  # a backlog of stale frames, over the bound
        line.client.xadd(keys.frames(line.line),
                         encode_frame("cam", f"old-{i}", old, frame_jpegs[i % 8], "jpeg"))
    line.start_worker(backlog_limit=20, max_frame_age_s=1)
    line.wait_status("ready")
    wait_until(lambda: line.pending() == 0 and
               int(line.client.hget(keys.stats(line.line), "skipped") or 0) > 200, 60,
               "the stale frames to be skipped")
    skipped = int(line.client.hget(keys.stats(line.line), "skipped"))

    def logged():
        events = [e for e in line.worker.events() if e.get("event") == "frames_skipped"]
        return events if sum(e["n"] for e in events) == skipped else None

    skips = wait_until(logged, 15, "every skip to be accounted for in the log")
    assert 1 <= len(skips) <= 6  # a few lines that say how many, not one line per frame



def _big_pngs(n: int, side: int = 4096) -> list[bytes]:
    """PNGs that compress to ~200 KB but take a second or more each to decode: a slow batch."""
    import io

    import numpy as np
    from PIL import Image

    out = []
    for i in range(n):
        img = np.zeros((side, side, 3), np.uint8)
        img[:, :, 0] = np.linspace(0, 255, side, dtype=np.uint8)[None, :]
        img[:, :, 1] = i * 29 % 256
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


def test_a_batch_slower_than_the_claim_idle_time_is_neither_claimed_nor_dead_lettered(
        chaos, record):
    line = chaos()
    line.start_worker()
    second = Proc(["worker"], daemon_env(line.url, line.line, consumer="chaos-worker-2",
                                         model=line.model, **CHAOS_SETTINGS),
                  line.tmp / "chaos-worker-2.log")
    try:
        line.wait_status("ready")
        for i, data in enumerate(_big_pngs(8)):  # 4 per batch: several seconds per batch,
            line.client.xadd(keys.frames(line.line),  # against a claim idle time of 1.5 s
                             encode_frame("cam", f"big-{i}", time.time(), data, "png"))
            line.sent.append(f"big-{i}")
        line.wait_settled(timeout=180)
        events = line.worker.events() + second.events()
    finally:
        second.stop()
    fig = record(line.figures("batches slower than the claim idle"))
    assert fig.scored == 8 and fig.dead == 0
    assert not [e for e in events if e.get("event") == "frames_claimed"]
