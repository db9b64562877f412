"""Redis misbehaves under a running worker: restarts (with and without persistence), FLUSHALL,
keys deleted or replaced, out of memory, stopped longer than the socket timeout, a full disk
for its append-only file. Each frame gets exactly one result or a dead letter with a reason;
none stays pending; the health probe says the truth within RLR_STALL_S."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from daemon.wire import keys
from tests.chaos.line import CHAOS_SETTINGS, wait_until

STALL_S = CHAOS_SETTINGS["stall_s"]


def test_redis_restart_with_aof_loses_nothing(chaos, frame_jpegs, record):
    line = chaos(aof=True)
    line.start_worker()
    line.wait_status("ready")
    line.push(frame_jpegs[:12])
    line.server.restart(down_s=1.0)  # SIGKILL: only the fsync'd append-only file survives
    line.push(frame_jpegs[12:24])
    line.wait_settled(timeout=90)
    line.wait_status("ready")
    fig = record(line.figures("redis restart, AOF"))
    assert fig.scored == 24


def test_redis_restart_without_persistence_recovers_for_new_frames(chaos, frame_jpegs, record):
    line = chaos(aof=False)
    line.start_worker()
    line.wait_status("ready")
    before = line.push(frame_jpegs[:8])
    line.wait_settled(before)
    line.server.restart(down_s=0.5)  # Redis forgets frames, results, groups, heartbeats
    after = line.push(frame_jpegs[8:20])
    line.wait_settled(after, timeout=90)
    line.wait_status("ready")
    record(line.figures("redis restart, no persistence", ids=after,
                        note="what Redis held before the restart is gone with it"))


def test_flushall_mid_run(chaos, frame_jpegs, record):
    line = chaos()
    line.start_worker()
    line.wait_status("ready")
    line.push(frame_jpegs[:8])
    line.client.flushall()
    after = line.push(frame_jpegs[8:20])
    line.wait_settled(after, timeout=60)
    beat = line.wait_status("ready")
    assert beat["tasks"]["backlog"]["restarts"] == 0  # a lost group is not a task failure
    record(line.figures("FLUSHALL mid-run", ids=after, note="flushed frames are gone"))


def test_frames_key_deleted_and_replaced_by_another_type(chaos, frame_jpegs, record):
    line = chaos()
    line.start_worker(task_max_failures=50)
    line.wait_status("ready")
    key = keys.frames(line.line)
    first = line.push(frame_jpegs[:4])
    line.wait_settled(first)
    line.client.delete(key)  # the heartbeat task died on "no such key" before
    beat_before = line.heartbeat()["updated_at"]
    second = line.push(frame_jpegs[4:8])
    line.wait_settled(second)
    wait_until(lambda: line.heartbeat()["updated_at"] > beat_before + 1, 10,
               "heartbeats to go on after the key was deleted")
    line.client.delete(key)
    line.client.set(key, "not a stream")  # the reader died silently here before
    t0 = time.monotonic()
    wait_until(lambda: not line.probe()[0], STALL_S + 5, "the probe to say unhealthy")
    assert time.monotonic() - t0 <= STALL_S + 5
    beat = line.wait_status("degraded", "redis_unavailable")
    assert beat["tasks"]["reader"]["restarts"] >= 1
    assert "WRONGTYPE" in (beat["tasks"]["reader"]["error"] or "")
    line.client.delete(key)
    third = line.push(frame_jpegs[8:12])
    line.wait_settled(third, timeout=60)
    line.wait_status("ready", timeout=30)
    assert line.probe()[0]
    record(line.figures("frames key deleted / wrong type", ids=first + second + third))


def test_out_of_memory_then_recovery(chaos, frame_jpegs, record):
    line = chaos()
    line.start_worker()
    line.wait_status("ready")
    line.worker.send(signal.SIGSTOP)  # so the frames are still unread when memory runs out
    try:
        ids = line.push(frame_jpegs[:16])
        line.client.config_set("maxmemory", int(line.client.info("memory")["used_memory"]) // 2)
    finally:
        line.worker.send(signal.SIGCONT)
    # It reads them, cannot publish (OOM), waits; its frames are re-claimed meanwhile.
    wait_until(lambda: line.pending() == 16, 30, "the worker to read the frames")
    time.sleep(3 * CHAOS_SETTINGS["claim_idle_ms"] / 1000 + 1)
    starving = (line.settled(ids), line.probe()[0])
    line.client.config_set("maxmemory", 512 * 1024 * 1024)
    line.wait_settled(ids, timeout=60)
    line.wait_status("ready")
    fig = record(line.figures("out of memory, then more memory",
                              note="published once the limit was lifted"))
    assert starving == (False, False) and fig.scored == 16 and fig.dead == 0


def test_redis_stopped_longer_than_the_socket_timeout(chaos, frame_jpegs, record):
    line = chaos()
    line.start_worker()
    line.wait_status("ready")
    first = line.push(frame_jpegs[:6])
    line.wait_settled(first)
    line.server.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(CHAOS_SETTINGS["redis_timeout_s"] * 2.5)
        assert not line.probe()[0]  # honest: nothing can be read from a stopped Redis
    finally:
        line.server.process.send_signal(signal.SIGCONT)
    second = line.push(frame_jpegs[6:14])
    line.wait_settled(second, timeout=60)
    line.wait_status("ready")
    wait_until(lambda: line.probe()[0], 15, "the probe to say healthy again")
    assert "Unclosed" not in line.worker.log_path.read_text()
    record(line.figures("Redis SIGSTOP 5 s (timeout 2 s)"))


def test_full_disk_for_the_append_only_file(chaos, frame_jpegs, record, tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()}); the "
                    "full-disk scenario needs root and CAP_SYS_ADMIN")
    # everysec: with `always`, Redis exits on a failed AOF write instead of refusing writes
    line = chaos(workdir=mount / "redis", fsync="everysec")
    try:
        ids = line.push(frame_jpegs[:12])
        filler = mount / "filler"
        _fill(filler)
        line.start_worker()
        # Writes are refused (MISCONF) once Redis fails to append to its file: the heartbeat
        # cannot be refreshed, so the probe says unhealthy, and nothing gets published.
        wait_until(lambda: not line.probe()[0] and line.worker.events(), 60,
                   "the probe to say unhealthy on a full disk")
        time.sleep(3)
        assert not line.probe()[0] and not line.settled(ids)
        filler.unlink()  # space again: Redis writes its AOF and accepts writes
        line.wait_settled(ids, timeout=90)
        line.wait_status("ready", timeout=60)
        record(line.figures("full disk for the AOF, then space"))
    finally:
        line.stop()
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path) -> None:
    """Write zeros until the file system is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            pass
